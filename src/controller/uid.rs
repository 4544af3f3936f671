//! An object's UID, as the registers and listings that hold one per object keep it.

/// A UID in 16 bytes when it is a UUID written the way Kubernetes writes one (lowercase, with
/// hyphens), else the text itself. Held once per finished object (the drift register) and per
/// listed image (its owner tag), a UID as a `String` costs 72 bytes where this takes 24.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Uid {
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl Uid {
    pub fn new(uid: &str) -> Uid {
        match uuid::Uuid::try_parse(uid) {
            // Only the canonical form: another spelling of the same UUID is another tag value.
            Ok(parsed) if canonical(&parsed) == uid.as_bytes() => Uid::Uuid(*parsed.as_bytes()),
            _ => Uid::Text(uid.into()),
        }
    }
}

fn canonical(uuid: &uuid::Uuid) -> [u8; uuid::fmt::Hyphenated::LENGTH] {
    let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
    uuid.hyphenated().encode_lower(&mut text);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubernetes_uid_takes_sixteen_bytes_and_reads_back_the_same() {
        let text = "6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b";
        let uid = Uid::new(text);
        let Uid::Uuid(bytes) = uid else {
            panic!("{uid:?} is text");
        };
        assert_eq!(uuid::Uuid::from_bytes(bytes).to_string(), text);
        assert_eq!(uid, Uid::new(text));
        assert_eq!(size_of::<Uid>(), 24);
    }

    #[test]
    fn other_spellings_stay_text_and_differ_from_the_canonical_uid() {
        let canonical = Uid::new("6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b");
        for other in [
            "6F1C2A8E-3B4D-4E5F-8A9B-0C1D2E3F4A5B",
            "6f1c2a8e3b4d4e5f8a9b0c1d2e3f4a5b",
            "urn:uuid:6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b",
            "not-a-uuid",
            "",
        ] {
            let uid = Uid::new(other);
            assert_eq!(uid, Uid::Text(other.into()), "{other}");
            assert_ne!(uid, canonical);
        }
    }
}
