//! Alibaba Cloud request signatures: V3 (`ACS3-HMAC-SHA256`, the default of current SDKs) and
//! V1 (`HMAC-SHA1`, still sent by legacy SDKs and by new ones with `signature_algorithm='v2'`).
//!
//! These are pure functions over already-decoded parameters so that the client (which signs)
//! and the emulator (which verifies what official SDKs send) canonicalise identically.

use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

pub const V3_ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// RFC 3986 unreserved characters stay as they are; everything else is `%XY` (uppercase hex).
/// So space is `%20` (never `+`), `*` is `%2A` and `~` stays `~`.
const RFC3986_RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn percent_encode(value: &str) -> String {
    utf8_percent_encode(value, RFC3986_RESERVED).to_string()
}

/// `k1=v1&k2=v2` with keys sorted by byte order and both sides percent-encoded; empty values
/// are kept as `k=`. Used by V1 (over all parameters) and V3 (over the query).
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()).then(a.1.cmp(&b.1)));
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// V1 string to sign: `METHOD&%2F&percentEncode(canonical query)`. `params` are every request
/// parameter (query and form body) except `Signature`.
pub fn v1_string_to_sign(method: &str, params: &[(String, String)]) -> String {
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode("/"),
        percent_encode(&canonical_query(params))
    )
}

/// V1 signature: base64(HMAC-SHA1(secret + "&", string to sign)).
pub fn v1_signature(access_key_secret: &str, string_to_sign: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(format!("{access_key_secret}&").as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Lowercase hex SHA-256, the `x-acs-content-sha256` value and the canonical request's last line.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The parts of a request that V3 signs. Header names must be lowercase; `signed_headers` must
/// be sorted and each must be present in `headers`.
pub struct V3Input<'a> {
    pub method: &'a str,
    pub canonical_uri: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub signed_headers: &'a [String],
    pub hashed_payload: &'a str,
}

pub fn v3_canonical_request(input: &V3Input<'_>) -> String {
    let canonical_headers: String = input
        .signed_headers
        .iter()
        .map(|name| {
            let value = input
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.trim())
                .unwrap_or("");
            format!("{name}:{value}\n")
        })
        .collect();
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        input.method.to_ascii_uppercase(),
        input.canonical_uri,
        canonical_query(input.query),
        canonical_headers,
        input.signed_headers.join(";"),
        input.hashed_payload
    )
}

pub fn v3_string_to_sign(canonical_request: &str) -> String {
    format!(
        "{V3_ALGORITHM}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// V3 signature: lowercase hex HMAC-SHA256 keyed with the raw secret.
pub fn v3_signature(access_key_secret: &str, string_to_sign: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(access_key_secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub fn v3_authorization(access_key_id: &str, signed_headers: &[String], signature: &str) -> String {
    format!(
        "{V3_ALGORITHM} Credential={access_key_id},SignedHeaders={},Signature={signature}",
        signed_headers.join(";")
    )
}

/// The three fields of a V3 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Authorization {
    pub access_key_id: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parses `ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..`; `None` when malformed.
pub fn parse_v3_authorization(header: &str) -> Option<V3Authorization> {
    let rest = header.strip_prefix(V3_ALGORITHM)?.trim_start();
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, value) = part.trim().split_once('=')?;
        match key {
            "Credential" => credential = Some(value.to_string()),
            "SignedHeaders" => signed = Some(value.to_string()),
            "Signature" => signature = Some(value.to_string()),
            _ => {}
        }
    }
    let signed_headers = signed?
        .split(';')
        .filter(|h| !h.is_empty())
        .map(|h| h.to_ascii_lowercase())
        .collect();
    Some(V3Authorization {
        access_key_id: credential.filter(|c| !c.is_empty())?,
        signed_headers,
        signature: signature.filter(|s| !s.is_empty())?,
    })
}

/// Timestamps as both signatures want them: UTC `yyyy-MM-ddTHH:mm:ssZ`.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn percent_encoding_follows_rfc3986_as_alibaba_requires() {
        assert_eq!(percent_encode("a b*c~d"), "a%20b%2Ac~d");
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(percent_encode("中"), "%E4%B8%AD");
        // aliyun/darabonba-openapi-util python/tests/test_client.py, test_get_canonical_query_string.
        assert_eq!(
            canonical_query(&pairs(&[("test", " ~/*-+")])),
            "test=%20~%2F%2A-%2B"
        );
    }

    #[test]
    fn v3_authorization_round_trips() {
        let signed = vec!["host".to_string(), "x-acs-action".to_string()];
        let header = v3_authorization("testid", &signed, "abc123");
        let parsed = parse_v3_authorization(&header).unwrap();
        assert_eq!(parsed.access_key_id, "testid");
        assert_eq!(parsed.signed_headers, signed);
        assert_eq!(parsed.signature, "abc123");
        assert!(parse_v3_authorization("HMAC-SHA1 Credential=x").is_none());
    }

    // ---- Official V3 vectors -------------------------------------------------------------

    /// The worked example of "Request syntax and signature method V3"
    /// (https://www.alibabacloud.com/help/en/sdk/product-overview/v3-request-structure-and-signature,
    /// zh: https://help.aliyun.com/zh/sdk/product-overview/v3-request-structure-and-signature):
    /// every intermediate string is the document's.
    #[test]
    fn v3_official_document_example() {
        let empty_hash = sha256_hex(b"");
        assert_eq!(
            empty_hash,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let headers = pairs(&[
            ("host", "ecs.cn-shanghai.aliyuncs.com"),
            ("x-acs-action", "RunInstances"),
            ("x-acs-content-sha256", &empty_hash),
            ("x-acs-date", "2023-10-26T10:22:32Z"),
            ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
            ("x-acs-version", "2014-05-26"),
        ]);
        let signed: Vec<String> = headers.iter().map(|(n, _)| n.clone()).collect();
        let query = pairs(&[
            ("RegionId", "cn-shanghai"),
            (
                "ImageId",
                "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
            ),
        ]);
        let canonical = v3_canonical_request(&V3Input {
            method: "POST",
            canonical_uri: "/",
            query: &query,
            headers: &headers,
            signed_headers: &signed,
            hashed_payload: &empty_hash,
        });
        assert_eq!(
            canonical,
            "POST\n/\nImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\n\
             host:ecs.cn-shanghai.aliyuncs.com\nx-acs-action:RunInstances\n\
             x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-acs-date:2023-10-26T10:22:32Z\nx-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\n\
             x-acs-version:2014-05-26\n\n\
             host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let string_to_sign = v3_string_to_sign(&canonical);
        assert_eq!(
            string_to_sign,
            "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
        );
        let signature = v3_signature("YourAccessKeySecret", &string_to_sign);
        assert_eq!(
            signature,
            "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
        assert_eq!(
            v3_authorization("YourAccessKeyId", &signed, &signature),
            "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;\
             x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,\
             Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
    }

    fn sdk_v3_authorization(method: &str, canonical_uri: &str, header_value: &str) -> String {
        let headers = pairs(&[("x-acs-test", header_value)]);
        let signed = vec!["x-acs-test".to_string()];
        let canonical = v3_canonical_request(&V3Input {
            method,
            canonical_uri,
            query: &pairs(&[("test", "ok"), ("empty", "")]),
            headers: &headers,
            signed_headers: &signed,
            // The SDK tests pass this fixed "payload hash" (it is SM3("test")).
            hashed_payload: "55e12e91650d2fec56ec74e1d3e4ddbfce2ef3a65890c2a19ecf88a307e76a23",
        });
        let signature = v3_signature("secret", &v3_string_to_sign(&canonical));
        v3_authorization("acesskey", &signed, &signature)
    }

    /// aliyun/darabonba-openapi-util java/src/test/java/com/aliyun/openapiutil/ClientTest.java,
    /// getAuthorizationTest: GET, empty pathname, query `test=ok&empty=`, header `x-acs-test`
    /// (the Java map keeps the first of `x-acs-test`/`x-acs-TEST`).
    #[test]
    fn v3_official_java_sdk_vector() {
        assert_eq!(
            sdk_v3_authorization("GET", "", "http"),
            "ACS3-HMAC-SHA256 Credential=acesskey,SignedHeaders=x-acs-test,\
             Signature=3f62ee8a912ade7e6c35ec8e2f67ccb06140e8182ab98c37f781335f04875e99"
        );
    }

    /// aliyun/darabonba-openapi-util golang/service/service_test.go, Test_GetAuthorization:
    /// no method, `/`, and the repeated header's values sorted and joined with `,`.
    #[test]
    fn v3_official_go_sdk_vector() {
        assert_eq!(
            sdk_v3_authorization("", "/", "http,https"),
            "ACS3-HMAC-SHA256 Credential=acesskey,SignedHeaders=x-acs-test,\
             Signature=4ab59fffe3c5738ff8a2729f90cc04fe18b02a4b15b2102cbaf92f9ff3df2ea3"
        );
    }

    // ---- Official V1 (HMAC-SHA1) vectors --------------------------------------------------

    fn describe_regions_doc_params(timestamp_key: &str) -> Vec<(String, String)> {
        pairs(&[
            (timestamp_key, "2016-02-23T12:46:24Z"),
            ("Format", "XML"),
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("Version", "2014-05-26"),
            ("SignatureVersion", "1.0"),
        ])
    }

    /// AlibabaCloudDocs/ecs "intl.en-US/API Reference/Getting started/Request signatures.md",
    /// Example 1 (DescribeRegions, testid/testsecret).
    #[test]
    fn v1_official_ecs_document_example() {
        let string_to_sign = v1_string_to_sign("GET", &describe_regions_doc_params("Timestamp"));
        assert_eq!(
            string_to_sign,
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML\
             %26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf\
             %26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
        );
        let signature = v1_signature("testsecret", &string_to_sign);
        assert_eq!(signature, "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
        assert_eq!(
            percent_encode(&signature),
            "OLeaidS1JvxuMvnyHOwuJ%2BuX5qY%3D"
        );
    }

    /// The earlier revision of the same ECS document (and the RPC signature pages of other
    /// services) spelled the parameter `TimeStamp`: `CT9X0VtwR86fNWSnsc6v8YGOjuE=`.
    #[test]
    fn v1_official_ecs_document_example_earlier_revision() {
        let string_to_sign = v1_string_to_sign("GET", &describe_regions_doc_params("TimeStamp"));
        assert_eq!(
            v1_signature("testsecret", &string_to_sign),
            "CT9X0VtwR86fNWSnsc6v8YGOjuE="
        );
    }

    /// aliyun/darabonba-openapi-util python/tests/test_client.py test_get_rpc_signature and
    /// java ClientTest.getRPCSignatureTest; golang/service/service_test.go Test_GetRPCSignature
    /// (which passes an empty method).
    #[test]
    fn v1_official_sdk_util_vectors() {
        let params = pairs(&[("query", "test"), ("body", "test")]);
        assert_eq!(
            v1_signature("secret", &v1_string_to_sign("GET", &params)),
            "XlUyV4sXjOuX5FnjUz9IF9tm5rU="
        );
        let params = pairs(&[("test", "ok")]);
        assert_eq!(
            v1_signature("accessKeySecret", &v1_string_to_sign("", &params)),
            "jHx/oHoHNrbVfhncHEvPdHXZwHU="
        );
    }

    /// aliyun/alibaba-cloud-sdk-go sdk/auth/rpc_signature_composer_test.go,
    /// TestRpcSignatureComposer_buildRpcStringToSign: values are encoded twice in the string
    /// to sign (once in the canonical query, once for the whole query).
    #[test]
    fn v1_official_go_sdk_string_to_sign_vectors() {
        assert_eq!(v1_string_to_sign("GET", &[]), "GET&%2F&");
        assert_eq!(
            v1_string_to_sign("GET", &pairs(&[("key", "value")])),
            "GET&%2F&key%3Dvalue"
        );
        assert_eq!(
            v1_string_to_sign(
                "GET",
                &pairs(&[("key", "value"), ("q", "http://domain/?q=value&q2=value2")])
            ),
            "GET&%2F&key%3Dvalue%26q%3Dhttp%253A%252F%252Fdomain%252F%253Fq%253Dvalue%2526q2%253Dvalue2"
        );
    }

    // ---- Properties ------------------------------------------------------------------------

    /// Decodes a query string the way servers do (`+` is a space), like the emulator must.
    fn form_decode(query: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    }

    fn params_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec((".{1,12}", ".{0,16}"), 0..6)
    }

    proptest! {
        #[test]
        fn percent_encoding_round_trips_through_form_decoding(key in ".{0,24}", value in ".{0,24}") {
            let encoded = format!("{}={}", percent_encode(&key), percent_encode(&value));
            prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%=".contains(&b)));
            prop_assert_eq!(form_decode(&encoded), vec![(key, value)]);
        }

        /// A client signs decoded parameters; the wire may encode them differently (Python sends
        /// `+` for spaces); a server that form-decodes and re-canonicalises gets the same
        /// signature for both versions.
        #[test]
        fn signatures_survive_the_wire(params in params_strategy()) {
            let wire = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params.iter())
                .finish();
            let received = form_decode(&wire);
            prop_assert_eq!(canonical_query(&received), canonical_query(&params));

            let sign_v3 = |query: &[(String, String)]| {
                let headers = vec![("host".to_string(), "127.0.0.1:9100".to_string())];
                let signed = vec!["host".to_string()];
                let canonical = v3_canonical_request(&V3Input {
                    method: "POST",
                    canonical_uri: "/",
                    query,
                    headers: &headers,
                    signed_headers: &signed,
                    hashed_payload: &sha256_hex(b""),
                });
                v3_signature("testsecret", &v3_string_to_sign(&canonical))
            };
            prop_assert_eq!(sign_v3(&received), sign_v3(&params));
            prop_assert_eq!(
                v1_signature("testsecret", &v1_string_to_sign("POST", &received)),
                v1_signature("testsecret", &v1_string_to_sign("POST", &params))
            );
        }
    }
}
