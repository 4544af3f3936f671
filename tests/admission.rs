//! What the real kube-apiserver admits as an `ImageCopy`, `ImageImport` and `ImageExport`, row
//! by row: every documented input rule, wrong types, unknown fields under strict field
//! validation and changes to existing objects are refused with a message naming the offending
//! field; the valid edge cases are stored exactly as sent. Each kind's rows run in one test
//! against one namespace; a failure lists every failing row by name.

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;

use ecs_image_operator::api::{ImageCopy, ImageExport, ImageImport, ImageReplication};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use support::stage::{DESTINATION_REGION, SOURCE_IMAGE, SOURCE_REGION};

/// ECS allows 20 tags per image; the operator adds its two owner tags.
const MAX_TAGS: usize = 18;
/// ImportImage takes one system disk and at most 16 data disks.
const MAX_DISKS: usize = 17;
/// Field manager of the server-side applies and patches this test sends.
const FIELD_MANAGER: &str = "admission-test";
/// Bucket and file of the default import and export manifests.
const BUCKET: &str = "images-hangzhou";
const OBJECT: &str = "golden/system.qcow2";

/// One kind under test: what its manifests look like.
struct Kind {
    /// `kind` of the manifests.
    name: &'static str,
    resource: ApiResource,
    /// The required spec fields every row's manifest starts from.
    required: Value,
    /// Every optional field, set on the `Base::Full` object.
    optional: Value,
}

fn image_copy() -> Kind {
    Kind {
        name: "ImageCopy",
        resource: ApiResource::erase::<ImageCopy>(&()),
        required: json!({
            "sourceRegionId": SOURCE_REGION,
            "sourceImageId": SOURCE_IMAGE,
            "destinationRegionId": DESTINATION_REGION,
        }),
        optional: json!({
            "destinationImageName": "golden-2026-11",
            "destinationDescription": "golden image",
            "encrypted": true,
            "kmsKeyId": "key-1",
            "resourceGroupId": "rg-platform",
            "tags": {"team": "platform"},
            "deletionPolicy": "Delete",
            "credentialsSecretRef": {"name": "ecs-credentials"},
        }),
    }
}

fn image_import() -> Kind {
    Kind {
        name: "ImageImport",
        resource: ApiResource::erase::<ImageImport>(&()),
        required: json!({
            "regionId": SOURCE_REGION,
            "diskDeviceMappings": [{"ossBucket": BUCKET, "ossObject": OBJECT}],
        }),
        optional: json!({
            "imageName": "golden-import",
            "description": "imported golden image",
            "osType": "linux",
            "platform": "Ubuntu",
            "architecture": "x86_64",
            "diskDeviceMappings": [{
                "ossBucket": BUCKET,
                "ossObject": OBJECT,
                "format": "QCOW2",
                "diskImageSize": 40,
                "device": "/dev/xvda",
            }],
            "tags": {"team": "platform"},
            "deletionPolicy": "Delete",
            "credentialsSecretRef": {"name": "ecs-credentials"},
        }),
    }
}

fn image_export() -> Kind {
    Kind {
        name: "ImageExport",
        resource: ApiResource::erase::<ImageExport>(&()),
        required: json!({
            "regionId": SOURCE_REGION,
            "imageId": SOURCE_IMAGE,
            "ossBucket": BUCKET,
        }),
        optional: json!({
            "ossPrefix": "golden2026",
            "imageFormat": "qcow2",
            "credentialsSecretRef": {"name": "ecs-credentials"},
        }),
    }
}

fn image_replication() -> Kind {
    Kind {
        name: "ImageReplication",
        resource: ApiResource::erase::<ImageReplication>(&()),
        required: json!({
            "sourceRegionId": SOURCE_REGION,
            "sourceImageId": SOURCE_IMAGE,
            "destinationRegionIds": [DESTINATION_REGION, "cn-beijing"],
        }),
        optional: json!({
            "destinationImageName": "golden-2026-12",
            "destinationDescription": "golden image",
            "encrypted": true,
            "kmsKeyIds": {"cn-beijing": "key-bj"},
            "resourceGroupId": "rg-platform",
            "tags": {"team": "platform"},
            "deletionPolicy": "Delete",
            "credentialsSecretRef": {"name": "ecs-credentials"},
            "publishTo": "golden-images",
        }),
    }
}

impl Kind {
    /// The manifest of `name`: the required spec fields with `spec_overrides` merged in (a
    /// `null` removes a field).
    fn manifest(&self, name: &str, spec_overrides: &Value) -> Value {
        let mut spec = self.required.clone();
        let fields = spec.as_object_mut().expect("spec is an object");
        for (key, value) in spec_overrides
            .as_object()
            .expect("spec overrides are an object")
        {
            if value.is_null() {
                fields.remove(key);
            } else {
                fields.insert(key.clone(), value.clone());
            }
        }
        json!({
            "apiVersion": "imageops.dev/v1alpha1",
            "kind": self.name,
            "metadata": {"name": name},
            "spec": spec,
        })
    }
}

/// What the apiserver must answer.
enum Expect {
    /// Refused with a message containing this text: the offending field's path, or for a
    /// change of an immutable field `spec.<field> is immutable`.
    Refused(&'static str),
    /// Stored, with every field the request set (or removed) as the request said.
    Stored,
    /// Stored as sent, and the stored spec also has these fields the apiserver filled in.
    Defaulted(Value),
}

/// An existing object the change rows patch.
#[derive(Clone, Copy)]
enum Base {
    /// Every optional field set.
    Full,
    /// Only the required fields.
    Bare,
}

impl Base {
    fn object_name(self) -> &'static str {
        match self {
            Base::Full => "base-full",
            Base::Bare => "base-bare",
        }
    }

    fn spec(self, kind: &Kind) -> Value {
        match self {
            Base::Full => kind.optional.clone(),
            Base::Bare => json!({}),
        }
    }
}

/// How a row reaches the apiserver.
enum Request {
    /// POST of the default manifest with these spec fields merged in (`null` removes one).
    Create(Value),
    /// POST of the default manifest without its spec.
    CreateWithoutSpec,
    /// POST with `fieldValidation=Strict` of the default manifest with these spec fields merged in.
    CreateStrict(Value),
    /// Server-side apply with `fieldValidation=Strict` of the default manifest with these spec
    /// fields merged in.
    ApplyStrict(Value),
    /// `kubectl ARGS -f -` of the default manifest with these spec fields merged in.
    Kubectl(&'static [&'static str], Value),
    /// JSON merge patch of an existing object.
    Change {
        base: Base,
        patch: Value,
        strict: bool,
    },
}

struct Row {
    name: &'static str,
    request: Request,
    expect: Expect,
}

/// What the apiserver answered.
enum Outcome {
    Stored(Value),
    Refused {
        /// HTTP status; unknown when the request went through kubectl.
        code: Option<u16>,
        message: String,
    },
}

fn refused(name: &'static str, spec: Value, field: &'static str) -> Row {
    Row {
        name,
        request: Request::Create(spec),
        expect: Expect::Refused(field),
    }
}

fn stored(name: &'static str, spec: Value) -> Row {
    Row {
        name,
        request: Request::Create(spec),
        expect: Expect::Stored,
    }
}

fn unknown_field(name: &'static str, spec: Value, field: &'static str) -> Row {
    Row {
        name,
        request: Request::CreateStrict(spec),
        expect: Expect::Refused(field),
    }
}

fn change(name: &'static str, base: Base, spec_patch: Value, expect: Expect) -> Row {
    Row {
        name,
        request: Request::Change {
            base,
            patch: json!({ "spec": spec_patch }),
            strict: false,
        },
        expect,
    }
}

fn missing_spec() -> Row {
    Row {
        name: "missing spec",
        request: Request::CreateWithoutSpec,
        expect: Expect::Refused("spec: Required value"),
    }
}

fn labels_only_change() -> Row {
    Row {
        name: "change labels only",
        request: Request::Change {
            base: Base::Full,
            patch: json!({"metadata": {"labels": {"team": "platform"}}}),
            strict: false,
        },
        expect: Expect::Stored,
    }
}

fn tags(count: usize) -> BTreeMap<String, String> {
    (0..count)
        .map(|i| (format!("team{i}"), "platform".to_owned()))
        .collect()
}

/// A name of `length` characters that ECS accepts but for its length.
fn name_of(length: usize) -> String {
    format!("g{}", "0".repeat(length - 1))
}

/// ECS's image name rules, for the field `field` (`spec.<key>`).
fn image_name_rows(key: &str, field: &'static str) -> Vec<Row> {
    let with = |value: Value| json!({ key: value });
    vec![
        refused("name of 1 character", with(json!("g")), field),
        refused("name of 129 characters", with(json!(name_of(129))), field),
        refused(
            "name starting with a digit",
            with(json!("2026-golden")),
            field,
        ),
        refused("name starting with a dash", with(json!("-golden")), field),
        refused("name with a space", with(json!("golden image")), field),
        refused(
            "name starting with aliyun",
            with(json!("aliyun-golden")),
            field,
        ),
        refused("name starting with acs:", with(json!("acs:golden")), field),
        refused(
            "name containing http://",
            with(json!("golden-http://x")),
            field,
        ),
        refused(
            "name containing https://",
            with(json!("golden-https://x")),
            field,
        ),
        stored("name of exactly 2 characters", with(json!("go"))),
        stored("name of exactly 128 characters", with(json!(name_of(128)))),
        stored(
            "name starting with a Chinese character",
            with(json!("金色镜像-2026")),
        ),
        stored(
            "name with . : _ - inside",
            with(json!("golden.v1:base_image-2026")),
        ),
    ]
}

/// ECS's image description rules, for the field `field` (`spec.<key>`).
fn description_rows(key: &str, field: &'static str) -> Vec<Row> {
    let with = |value: Value| json!({ key: value });
    vec![
        refused("description of 1 character", with(json!("d")), field),
        refused(
            "description of 257 characters",
            with(json!("d".repeat(257))),
            field,
        ),
        refused(
            "description starting with http://",
            with(json!("http://example.com/golden")),
            field,
        ),
        refused(
            "description starting with https://",
            with(json!("https://example.com/golden")),
            field,
        ),
        stored("description of exactly 2 characters", with(json!("ok"))),
        stored(
            "description of exactly 256 characters",
            with(json!("d".repeat(256))),
        ),
        stored(
            "description of 256 Chinese characters",
            with(json!("镜".repeat(256))),
        ),
        stored(
            "description with a link after its start",
            with(json!("built from https://example.com/golden")),
        ),
    ]
}

/// Region id rules, for the field `field` (`spec.<key>`).
fn region_rows(key: &str, field: &'static str) -> Vec<Row> {
    let with = |value: Value| json!({ key: value });
    vec![
        refused("region in upper case", with(json!("CN-HANGZHOU")), field),
        refused("region without a dash", with(json!("hangzhou")), field),
        refused(
            "region with an underscore",
            with(json!("cn_shanghai")),
            field,
        ),
        refused("region of one letter", with(json!("c")), field),
        stored("region with a digit", with(json!("ap-southeast-1"))),
    ]
}

/// OSS bucket name rules; `with` puts a bucket name where the kind has it, `field` is that path.
fn bucket_rows(with: impl Fn(&str) -> Value, field: &'static str) -> Vec<Row> {
    vec![
        refused("bucket of 2 characters", with("ab"), field),
        refused("bucket of 64 characters", with(&"b".repeat(64)), field),
        refused("bucket in upper case", with("Images-Hangzhou"), field),
        refused("bucket with an underscore", with("images_hangzhou"), field),
        refused("bucket with a dot", with("images.hangzhou"), field),
        refused("bucket starting with a dash", with("-images"), field),
        refused("bucket ending with a dash", with("images-"), field),
        stored("bucket of exactly 3 characters", with("a-1")),
        stored("bucket of exactly 63 characters", with(&"b".repeat(63))),
        stored("bucket starting with a digit", with("2026-images")),
    ]
}

/// ECS's tag rules, and tags fixed once set; the same for every kind with tags.
fn tag_rows() -> Vec<Row> {
    vec![
        refused(
            "one tag more than the maximum",
            json!({"tags": tags(MAX_TAGS + 1)}),
            "spec.tags",
        ),
        refused(
            "empty tag key",
            json!({"tags": {"": "platform"}}),
            "spec.tags",
        ),
        refused(
            "tag key of 129 characters",
            json!({"tags": {"k".repeat(129): "platform"}}),
            "spec.tags",
        ),
        refused(
            "tag key starting with aliyun",
            json!({"tags": {"aliyun-team": "platform"}}),
            "spec.tags",
        ),
        refused(
            "tag key starting with acs:",
            json!({"tags": {"acs:team": "platform"}}),
            "spec.tags",
        ),
        refused(
            "tag key starting with the operator's prefix",
            json!({"tags": {"imageops.dev/owner-uid": "platform"}}),
            "spec.tags",
        ),
        refused(
            "tag key containing http://",
            json!({"tags": {"team-http://x": "platform"}}),
            "spec.tags",
        ),
        refused(
            "tag value of 129 characters",
            json!({"tags": {"team": "v".repeat(129)}}),
            "spec.tags",
        ),
        refused(
            "tag value starting with acs:",
            json!({"tags": {"team": "acs:platform"}}),
            "spec.tags",
        ),
        refused(
            "tag value containing https://",
            json!({"tags": {"team": "see https://example.com"}}),
            "spec.tags",
        ),
        stored(
            "the maximum number of tags",
            json!({"tags": tags(MAX_TAGS)}),
        ),
        stored(
            "tag key and value of exactly 128 characters",
            json!({"tags": {"k".repeat(128): "v".repeat(128)}}),
        ),
        stored("empty tag value", json!({"tags": {"team": ""}})),
        stored(
            "tag value starting with aliyun",
            json!({"tags": {"team": "aliyun-platform"}}),
        ),
        refused(
            "list for a map",
            json!({"tags": ["team=platform"]}),
            "spec.tags",
        ),
        refused(
            "number for a tag value",
            json!({"tags": {"team": 7}}),
            "spec.tags",
        ),
        change(
            "change a tag value",
            Base::Full,
            json!({"tags": {"team": "payments"}}),
            Expect::Refused("spec.tags is immutable"),
        ),
        change(
            "add a tag",
            Base::Full,
            json!({"tags": {"owner": "alice"}}),
            Expect::Refused("spec.tags is immutable"),
        ),
        change(
            "remove the tags",
            Base::Full,
            json!({"tags": null}),
            Expect::Refused("spec.tags is immutable"),
        ),
        change(
            "add tags",
            Base::Bare,
            json!({"tags": {"team": "platform"}}),
            Expect::Refused("spec.tags is immutable"),
        ),
    ]
}

/// `deletionPolicy`, which may change at any time; the same for every kind that has one.
fn deletion_policy_rows() -> Vec<Row> {
    vec![
        refused(
            "deletionPolicy not in the enum",
            json!({"deletionPolicy": "Destroy"}),
            "spec.deletionPolicy",
        ),
        refused(
            "deletionPolicy in lower case",
            json!({"deletionPolicy": "retain"}),
            "spec.deletionPolicy",
        ),
        refused(
            "bool for an enum",
            json!({"deletionPolicy": true}),
            "spec.deletionPolicy",
        ),
        stored("deletionPolicy Retain", json!({"deletionPolicy": "Retain"})),
        change(
            "change deletionPolicy",
            Base::Full,
            json!({"deletionPolicy": "Retain"}),
            Expect::Stored,
        ),
        change(
            "add deletionPolicy",
            Base::Bare,
            json!({"deletionPolicy": "Retain"}),
            Expect::Stored,
        ),
    ]
}

/// `credentialsSecretRef`, which may change at any time; the same for every kind.
fn credentials_rows() -> Vec<Row> {
    vec![
        refused(
            "credentials Secret name with upper case and underscore",
            json!({"credentialsSecretRef": {"name": "ECS_Credentials"}}),
            "spec.credentialsSecretRef.name",
        ),
        refused(
            "credentials Secret name ending with a dash",
            json!({"credentialsSecretRef": {"name": "ecs-credentials-"}}),
            "spec.credentialsSecretRef.name",
        ),
        refused(
            "credentials Secret name of 254 characters",
            json!({"credentialsSecretRef": {"name": "s".repeat(254)}}),
            "spec.credentialsSecretRef.name",
        ),
        stored(
            "credentials Secret name with a dot",
            json!({"credentialsSecretRef": {"name": "ecs-credentials.v2"}}),
        ),
        refused(
            "credentialsSecretRef without a name",
            json!({"credentialsSecretRef": {}}),
            "spec.credentialsSecretRef.name",
        ),
        refused(
            "string for an object",
            json!({"credentialsSecretRef": "ecs-credentials"}),
            "spec.credentialsSecretRef",
        ),
        unknown_field(
            "namespace in credentialsSecretRef",
            json!({"credentialsSecretRef": {"name": "ecs-credentials", "namespace": "kube-system"}}),
            "spec.credentialsSecretRef.namespace",
        ),
        change(
            "change credentialsSecretRef",
            Base::Full,
            json!({"credentialsSecretRef": {"name": "other-credentials"}}),
            Expect::Stored,
        ),
        change(
            "remove credentialsSecretRef",
            Base::Full,
            json!({"credentialsSecretRef": null}),
            Expect::Stored,
        ),
        change(
            "add credentialsSecretRef",
            Base::Bare,
            json!({"credentialsSecretRef": {"name": "ecs-credentials"}}),
            Expect::Stored,
        ),
    ]
}

/// The rows only `ImageCopy` has; `copy_rows` adds the shared ones.
fn copy_rows() -> Vec<Row> {
    let own = vec![
        // Regions and the source image.
        refused(
            "source region in upper case",
            json!({"sourceRegionId": "CN-HANGZHOU"}),
            "spec.sourceRegionId",
        ),
        refused(
            "source region without a dash",
            json!({"sourceRegionId": "hangzhou"}),
            "spec.sourceRegionId",
        ),
        refused(
            "destination region with an underscore",
            json!({"destinationRegionId": "cn_shanghai"}),
            "spec.destinationRegionId",
        ),
        refused(
            "destination region of one letter",
            json!({"destinationRegionId": "c"}),
            "spec.destinationRegionId",
        ),
        refused(
            "destination equals source",
            json!({"destinationRegionId": SOURCE_REGION}),
            "spec.destinationRegionId",
        ),
        refused(
            "source image id without m-",
            json!({"sourceImageId": "img-0001"}),
            "spec.sourceImageId",
        ),
        // Encryption.
        refused(
            "kmsKeyId without encrypted",
            json!({"kmsKeyId": "key-1"}),
            "spec.kmsKeyId",
        ),
        refused(
            "kmsKeyId with encrypted false",
            json!({"kmsKeyId": "key-1", "encrypted": false}),
            "spec.kmsKeyId",
        ),
        refused(
            "empty kmsKeyId",
            json!({"encrypted": true, "kmsKeyId": ""}),
            "spec.kmsKeyId",
        ),
        stored("encrypted without kmsKeyId", json!({"encrypted": true})),
        stored(
            "encrypted with kmsKeyId",
            json!({"encrypted": true, "kmsKeyId": "key-1"}),
        ),
        refused(
            "empty resourceGroupId",
            json!({"resourceGroupId": ""}),
            "spec.resourceGroupId",
        ),
        // Required fields.
        refused(
            "missing sourceRegionId",
            json!({"sourceRegionId": null}),
            "spec.sourceRegionId",
        ),
        refused(
            "missing sourceImageId",
            json!({"sourceImageId": null}),
            "spec.sourceImageId",
        ),
        refused(
            "missing destinationRegionId",
            json!({"destinationRegionId": null}),
            "spec.destinationRegionId",
        ),
        // Wrong types.
        refused(
            "string for a bool",
            json!({"encrypted": "true"}),
            "spec.encrypted",
        ),
        refused(
            "number for a string",
            json!({"sourceImageId": 1}),
            "spec.sourceImageId",
        ),
        // Unknown fields.
        unknown_field(
            "misspelt destinationRegionId",
            json!({"destRegionId": "cn-beijing"}),
            "spec.destRegionId",
        ),
        unknown_field(
            "kmsKeyId in the wrong case",
            json!({"encrypted": true, "kmsKeyID": "key-1"}),
            "spec.kmsKeyID",
        ),
        Row {
            name: "unknown field by server-side apply",
            request: Request::ApplyStrict(json!({"imageFamily": "golden"})),
            expect: Expect::Refused("spec.imageFamily"),
        },
        // Through kubectl, as a user sees it.
        Row {
            name: "kubectl apply of a same-region copy",
            request: Request::Kubectl(&["apply"], json!({"destinationRegionId": SOURCE_REGION})),
            expect: Expect::Refused("spec.destinationRegionId must differ"),
        },
        Row {
            name: "kubectl create --validate=strict with an unknown field",
            request: Request::Kubectl(
                &["create", "--validate=strict"],
                json!({"destinationImageNmae": "golden"}),
            ),
            expect: Expect::Refused("spec.destinationImageNmae"),
        },
        Row {
            name: "kubectl apply of a Chinese name",
            request: Request::Kubectl(&["apply"], json!({"destinationImageName": "金色镜像"})),
            expect: Expect::Stored,
        },
        // Changes of an object with every optional field set.
        change(
            "change sourceRegionId",
            Base::Full,
            json!({"sourceRegionId": "cn-beijing"}),
            Expect::Refused("spec.sourceRegionId is immutable"),
        ),
        change(
            "change sourceImageId",
            Base::Full,
            json!({"sourceImageId": "m-other0001"}),
            Expect::Refused("spec.sourceImageId is immutable"),
        ),
        change(
            "change destinationRegionId",
            Base::Full,
            json!({"destinationRegionId": "cn-beijing"}),
            Expect::Refused("spec.destinationRegionId is immutable"),
        ),
        change(
            "change destinationImageName",
            Base::Full,
            json!({"destinationImageName": "golden-2026-12"}),
            Expect::Refused("spec.destinationImageName is immutable"),
        ),
        change(
            "remove destinationImageName",
            Base::Full,
            json!({"destinationImageName": null}),
            Expect::Refused("spec.destinationImageName is immutable"),
        ),
        change(
            "change destinationDescription",
            Base::Full,
            json!({"destinationDescription": "another image"}),
            Expect::Refused("spec.destinationDescription is immutable"),
        ),
        change(
            "change encrypted",
            Base::Full,
            json!({"encrypted": false}),
            Expect::Refused("spec.encrypted is immutable"),
        ),
        change(
            "change kmsKeyId",
            Base::Full,
            json!({"kmsKeyId": "key-2"}),
            Expect::Refused("spec.kmsKeyId is immutable"),
        ),
        change(
            "remove kmsKeyId",
            Base::Full,
            json!({"kmsKeyId": null}),
            Expect::Refused("spec.kmsKeyId is immutable"),
        ),
        change(
            "change resourceGroupId",
            Base::Full,
            json!({"resourceGroupId": "rg-payments"}),
            Expect::Refused("spec.resourceGroupId is immutable"),
        ),
        Row {
            name: "change with an unknown field under strict validation",
            request: Request::Change {
                base: Base::Full,
                patch: json!({"spec": {"destRegionId": "cn-beijing"}}),
                strict: true,
            },
            expect: Expect::Refused("spec.destRegionId"),
        },
        // Changes of an object with only the required fields.
        change(
            "add destinationImageName",
            Base::Bare,
            json!({"destinationImageName": "golden"}),
            Expect::Refused("spec.destinationImageName is immutable"),
        ),
        change(
            "add destinationDescription",
            Base::Bare,
            json!({"destinationDescription": "golden image"}),
            Expect::Refused("spec.destinationDescription is immutable"),
        ),
        change(
            "add encrypted",
            Base::Bare,
            json!({"encrypted": true}),
            Expect::Refused("spec.encrypted is immutable"),
        ),
        change(
            "add resourceGroupId",
            Base::Bare,
            json!({"resourceGroupId": "rg-platform"}),
            Expect::Refused("spec.resourceGroupId is immutable"),
        ),
    ];
    [
        own,
        image_name_rows("destinationImageName", "spec.destinationImageName"),
        description_rows("destinationDescription", "spec.destinationDescription"),
        tag_rows(),
        deletion_policy_rows(),
        credentials_rows(),
        vec![missing_spec(), labels_only_change()],
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn replication_rows() -> Vec<Row> {
    let own = vec![
        refused(
            "source region among the destinations",
            json!({"destinationRegionIds": [DESTINATION_REGION, SOURCE_REGION]}),
            "spec.destinationRegionIds must not include spec.sourceRegionId",
        ),
        refused(
            "no destination",
            json!({"destinationRegionIds": []}),
            "spec.destinationRegionIds",
        ),
        refused(
            "a destination twice",
            json!({"destinationRegionIds": [DESTINATION_REGION, DESTINATION_REGION]}),
            "spec.destinationRegionIds[1]: Duplicate value",
        ),
        refused(
            "destination region in upper case",
            json!({"destinationRegionIds": ["CN-SHANGHAI"]}),
            "spec.destinationRegionIds[0]",
        ),
        refused(
            "missing destinationRegionIds",
            json!({"destinationRegionIds": null}),
            "spec.destinationRegionIds",
        ),
        stored(
            "one destination",
            json!({"destinationRegionIds": ["ap-southeast-1"]}),
        ),
        refused(
            "kmsKeyIds without encrypted",
            json!({"kmsKeyIds": {"cn-beijing": "key-bj"}}),
            "spec.kmsKeyIds requires spec.encrypted: true",
        ),
        refused(
            "kmsKeyIds for a region not copied to",
            json!({"encrypted": true, "kmsKeyIds": {"cn-qingdao": "key-qd"}}),
            "spec.kmsKeyIds keys must be regions of spec.destinationRegionIds",
        ),
        refused(
            "an empty kms key",
            json!({"encrypted": true, "kmsKeyIds": {"cn-beijing": ""}}),
            "spec.kmsKeyIds",
        ),
        stored(
            "encrypted with a key for one region",
            json!({"encrypted": true, "kmsKeyIds": {"cn-beijing": "key-bj"}}),
        ),
        refused(
            "publishTo with upper case",
            json!({"publishTo": "Golden_Images"}),
            "spec.publishTo",
        ),
        stored("publishTo", json!({"publishTo": "golden-images"})),
        // Changes: everything may change; a new generation with the same image name would
        // clash in ECS with the images that stay until it is Ready.
        change(
            "add a region",
            Base::Full,
            json!({"destinationRegionIds": [DESTINATION_REGION, "cn-beijing", "cn-qingdao"]}),
            Expect::Stored,
        ),
        change(
            "remove a region",
            Base::Bare,
            json!({"destinationRegionIds": ["cn-beijing"]}),
            Expect::Stored,
        ),
        change(
            "new source without a name",
            Base::Bare,
            json!({"sourceImageId": "m-demo0002"}),
            Expect::Stored,
        ),
        // The refusal comes first: a stored change moves the base object on.
        change(
            "new source keeping the name",
            Base::Full,
            json!({"sourceImageId": "m-demo0002"}),
            Expect::Refused("spec.destinationImageName must change"),
        ),
        change(
            "new source with a new name",
            Base::Full,
            json!({"sourceImageId": "m-demo0002", "destinationImageName": "golden-2027-01"}),
            Expect::Stored,
        ),
        change(
            "new tags keeping the name",
            Base::Full,
            json!({"tags": {"team": "payments"}}),
            Expect::Refused("spec.destinationImageName must change"),
        ),
        change(
            "new kms key keeping the name",
            Base::Full,
            json!({"kmsKeyIds": {"cn-beijing": "key-bj2"}}),
            Expect::Refused("spec.destinationImageName must change"),
        ),
        change(
            "change publishTo",
            Base::Full,
            json!({"publishTo": "golden-images-v2"}),
            Expect::Stored,
        ),
    ];
    // Tags follow ImageCopy's rules on create; their changes are this kind's own rows above.
    let tag_creates = tag_rows()
        .into_iter()
        .filter(|row| !matches!(row.request, Request::Change { .. }));
    [
        own,
        region_rows("sourceRegionId", "spec.sourceRegionId"),
        image_name_rows("destinationImageName", "spec.destinationImageName"),
        description_rows("destinationDescription", "spec.destinationDescription"),
        tag_creates.collect(),
        deletion_policy_rows(),
        credentials_rows(),
        vec![missing_spec(), labels_only_change()],
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// One disk: the default file with `fields` merged in (`null` removes one).
fn disk_with(fields: Value) -> Value {
    let mut mapping = json!({"ossBucket": BUCKET, "ossObject": OBJECT});
    let entries = mapping.as_object_mut().expect("a mapping is an object");
    for (key, value) in fields.as_object().expect("disk fields are an object") {
        if value.is_null() {
            entries.remove(key);
        } else {
            entries.insert(key.clone(), value.clone());
        }
    }
    mapping
}

/// A spec whose only disk is the default file with `fields` merged in.
fn one_disk(fields: Value) -> Value {
    json!({"diskDeviceMappings": [disk_with(fields)]})
}

/// A spec with `count` disks, one file each.
fn disks(count: usize) -> Value {
    let mappings: Vec<Value> = (0..count)
        .map(|i| disk_with(json!({"ossObject": format!("golden/disk-{i}.qcow2")})))
        .collect();
    json!({ "diskDeviceMappings": mappings })
}

fn import_rows() -> Vec<Row> {
    const BUCKET_FIELD: &str = "spec.diskDeviceMappings[0].ossBucket";
    const OBJECT_FIELD: &str = "spec.diskDeviceMappings[0].ossObject";
    const FORMAT_FIELD: &str = "spec.diskDeviceMappings[0].format";
    const SIZE_FIELD: &str = "spec.diskDeviceMappings[0].diskImageSize";
    const DEVICE_FIELD: &str = "spec.diskDeviceMappings[0].device";
    let own = vec![
        // Operating system, platform, architecture.
        refused(
            "osType in upper case",
            json!({"osType": "Linux"}),
            "spec.osType",
        ),
        refused(
            "osType not in the enum",
            json!({"osType": "freebsd"}),
            "spec.osType",
        ),
        stored("osType windows", json!({"osType": "windows"})),
        refused("empty platform", json!({"platform": ""}), "spec.platform"),
        refused(
            "platform of 65 characters",
            json!({"platform": "p".repeat(65)}),
            "spec.platform",
        ),
        stored("platform with a space", json!({"platform": "Others Linux"})),
        stored(
            "platform of exactly 64 characters",
            json!({"platform": "p".repeat(64)}),
        ),
        refused(
            "architecture amd64",
            json!({"architecture": "amd64"}),
            "spec.architecture",
        ),
        refused(
            "architecture in upper case",
            json!({"architecture": "X86_64"}),
            "spec.architecture",
        ),
        stored("architecture arm64", json!({"architecture": "arm64"})),
        stored("architecture i386", json!({"architecture": "i386"})),
        Row {
            name: "defaults for osType, architecture and deletionPolicy",
            request: Request::Create(json!({})),
            expect: Expect::Defaulted(json!({
                "osType": "linux",
                "architecture": "x86_64",
                "deletionPolicy": "Delete",
            })),
        },
        // Disks.
        refused(
            "no disk",
            json!({"diskDeviceMappings": []}),
            "spec.diskDeviceMappings",
        ),
        refused(
            "one disk more than the maximum",
            disks(MAX_DISKS + 1),
            "spec.diskDeviceMappings",
        ),
        stored("the maximum number of disks", disks(MAX_DISKS)),
        refused(
            "empty ossObject",
            one_disk(json!({"ossObject": ""})),
            OBJECT_FIELD,
        ),
        refused(
            "ossObject of 1025 characters",
            one_disk(json!({"ossObject": "o".repeat(1025)})),
            OBJECT_FIELD,
        ),
        stored(
            "ossObject of exactly 1024 characters",
            one_disk(json!({"ossObject": "o".repeat(1024)})),
        ),
        refused(
            "format in lower case",
            one_disk(json!({"format": "qcow2"})),
            FORMAT_FIELD,
        ),
        refused(
            "format not in the enum",
            one_disk(json!({"format": "ISO"})),
            FORMAT_FIELD,
        ),
        stored("format VMDK", one_disk(json!({"format": "VMDK"}))),
        stored("format RAW", one_disk(json!({"format": "RAW"}))),
        refused(
            "disk of 4 GiB",
            one_disk(json!({"diskImageSize": 4})),
            SIZE_FIELD,
        ),
        refused(
            "disk of 2049 GiB",
            one_disk(json!({"diskImageSize": 2049})),
            SIZE_FIELD,
        ),
        refused(
            "fractional disk size",
            one_disk(json!({"diskImageSize": 40.5})),
            SIZE_FIELD,
        ),
        refused(
            "string for a disk size",
            one_disk(json!({"diskImageSize": "40"})),
            SIZE_FIELD,
        ),
        stored(
            "disk of exactly 5 GiB",
            one_disk(json!({"diskImageSize": 5})),
        ),
        stored(
            "disk of exactly 2048 GiB",
            one_disk(json!({"diskImageSize": 2048})),
        ),
        refused(
            "empty device",
            one_disk(json!({"device": ""})),
            DEVICE_FIELD,
        ),
        refused(
            "device of 65 characters",
            one_disk(json!({"device": "d".repeat(65)})),
            DEVICE_FIELD,
        ),
        stored(
            "a system and a data disk with devices",
            json!({"diskDeviceMappings": [
                disk_with(json!({"device": "/dev/xvda", "diskImageSize": 40})),
                disk_with(json!({"ossObject": "golden/data.raw", "format": "RAW", "device": "/dev/xvdb"})),
            ]}),
        ),
        refused(
            "disk without ossBucket",
            one_disk(json!({"ossBucket": null})),
            BUCKET_FIELD,
        ),
        refused(
            "disk without ossObject",
            one_disk(json!({"ossObject": null})),
            OBJECT_FIELD,
        ),
        refused(
            "a bad bucket in the second disk",
            json!({"diskDeviceMappings": [disk_with(json!({})), disk_with(json!({"ossBucket": "Images"}))]}),
            "spec.diskDeviceMappings[1].ossBucket",
        ),
        refused(
            "object for a list",
            json!({"diskDeviceMappings": disk_with(json!({}))}),
            "spec.diskDeviceMappings",
        ),
        // Required fields.
        refused(
            "missing regionId",
            json!({"regionId": null}),
            "spec.regionId",
        ),
        refused(
            "missing diskDeviceMappings",
            json!({"diskDeviceMappings": null}),
            "spec.diskDeviceMappings",
        ),
        // Unknown fields.
        unknown_field(
            "imageName in the wrong case",
            json!({"imagename": "golden"}),
            "spec.imagename",
        ),
        unknown_field(
            "misspelt field of a disk",
            one_disk(json!({"ossBuckett": BUCKET})),
            "spec.diskDeviceMappings[0].ossBuckett",
        ),
        Row {
            name: "unknown field by server-side apply",
            request: Request::ApplyStrict(json!({"bootMode": "UEFI"})),
            expect: Expect::Refused("spec.bootMode"),
        },
        // Through kubectl, as a user sees it.
        Row {
            name: "kubectl apply of a bucket in upper case",
            request: Request::Kubectl(&["apply"], one_disk(json!({"ossBucket": "Images"}))),
            expect: Expect::Refused(BUCKET_FIELD),
        },
        Row {
            name: "kubectl apply of a Windows import",
            request: Request::Kubectl(
                &["apply"],
                json!({"osType": "windows", "platform": "Windows Server 2022", "imageName": "金色镜像"}),
            ),
            expect: Expect::Stored,
        },
        // Changes of an object with every optional field set.
        change(
            "change regionId",
            Base::Full,
            json!({"regionId": "cn-beijing"}),
            Expect::Refused("spec.regionId is immutable"),
        ),
        change(
            "change imageName",
            Base::Full,
            json!({"imageName": "golden-import-2"}),
            Expect::Refused("spec.imageName is immutable"),
        ),
        change(
            "remove imageName",
            Base::Full,
            json!({"imageName": null}),
            Expect::Refused("spec.imageName is immutable"),
        ),
        change(
            "change description",
            Base::Full,
            json!({"description": "another image"}),
            Expect::Refused("spec.description is immutable"),
        ),
        change(
            "change osType",
            Base::Full,
            json!({"osType": "windows"}),
            Expect::Refused("spec.osType is immutable"),
        ),
        change(
            "change platform",
            Base::Full,
            json!({"platform": "CentOS"}),
            Expect::Refused("spec.platform is immutable"),
        ),
        change(
            "remove platform",
            Base::Full,
            json!({"platform": null}),
            Expect::Refused("spec.platform is immutable"),
        ),
        change(
            "change architecture",
            Base::Full,
            json!({"architecture": "arm64"}),
            Expect::Refused("spec.architecture is immutable"),
        ),
        change(
            "change the size of a disk",
            Base::Full,
            json!({"diskDeviceMappings": [disk_with(json!({"format": "QCOW2", "diskImageSize": 80, "device": "/dev/xvda"}))]}),
            Expect::Refused("spec.diskDeviceMappings is immutable"),
        ),
        change(
            "add a disk",
            Base::Full,
            disks(2),
            Expect::Refused("spec.diskDeviceMappings is immutable"),
        ),
        Row {
            name: "change with an unknown field under strict validation",
            request: Request::Change {
                base: Base::Full,
                patch: json!({"spec": {"regionID": "cn-beijing"}}),
                strict: true,
            },
            expect: Expect::Refused("spec.regionID"),
        },
        // Changes of an object with only the required fields.
        change(
            "add imageName",
            Base::Bare,
            json!({"imageName": "golden"}),
            Expect::Refused("spec.imageName is immutable"),
        ),
        change(
            "add description",
            Base::Bare,
            json!({"description": "golden image"}),
            Expect::Refused("spec.description is immutable"),
        ),
        change(
            "add platform",
            Base::Bare,
            json!({"platform": "Ubuntu"}),
            Expect::Refused("spec.platform is immutable"),
        ),
        change(
            "set osType other than its default",
            Base::Bare,
            json!({"osType": "windows"}),
            Expect::Refused("spec.osType is immutable"),
        ),
        change(
            "write out the defaults",
            Base::Bare,
            json!({"osType": "linux", "architecture": "x86_64"}),
            Expect::Stored,
        ),
    ];
    [
        own,
        region_rows("regionId", "spec.regionId"),
        image_name_rows("imageName", "spec.imageName"),
        description_rows("description", "spec.description"),
        bucket_rows(
            |bucket| one_disk(json!({ "ossBucket": bucket })),
            BUCKET_FIELD,
        ),
        tag_rows(),
        deletion_policy_rows(),
        credentials_rows(),
        vec![missing_spec(), labels_only_change()],
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn export_rows() -> Vec<Row> {
    let own = vec![
        // The image.
        refused(
            "image id without m-",
            json!({"imageId": "img-0001"}),
            "spec.imageId",
        ),
        refused(
            "image id in upper case",
            json!({"imageId": "m-DEMO0001"}),
            "spec.imageId",
        ),
        refused(
            "image id of only m-",
            json!({"imageId": "m-"}),
            "spec.imageId",
        ),
        // Where the file goes.
        refused(
            "empty ossPrefix",
            json!({"ossPrefix": ""}),
            "spec.ossPrefix",
        ),
        refused(
            "ossPrefix of 31 characters",
            json!({"ossPrefix": "p".repeat(31)}),
            "spec.ossPrefix",
        ),
        refused(
            "ossPrefix with a dash",
            json!({"ossPrefix": "golden-2026"}),
            "spec.ossPrefix",
        ),
        refused(
            "ossPrefix with a slash",
            json!({"ossPrefix": "golden/2026"}),
            "spec.ossPrefix",
        ),
        stored(
            "ossPrefix of exactly 30 characters",
            json!({"ossPrefix": "p".repeat(30)}),
        ),
        stored(
            "ossPrefix with upper case and digits",
            json!({"ossPrefix": "Golden2026"}),
        ),
        refused(
            "imageFormat in upper case",
            json!({"imageFormat": "RAW"}),
            "spec.imageFormat",
        ),
        refused(
            "imageFormat not in the enum",
            json!({"imageFormat": "iso"}),
            "spec.imageFormat",
        ),
        stored("imageFormat vdi", json!({"imageFormat": "vdi"})),
        stored("imageFormat raw", json!({"imageFormat": "raw"})),
        // Required fields.
        refused(
            "missing regionId",
            json!({"regionId": null}),
            "spec.regionId",
        ),
        refused("missing imageId", json!({"imageId": null}), "spec.imageId"),
        refused(
            "missing ossBucket",
            json!({"ossBucket": null}),
            "spec.ossBucket",
        ),
        // Wrong types.
        refused(
            "number for a string",
            json!({"ossBucket": 7}),
            "spec.ossBucket",
        ),
        // Unknown fields: what ImageImport has and an export does not.
        unknown_field(
            "tags on an export",
            json!({"tags": {"team": "platform"}}),
            "spec.tags",
        ),
        unknown_field(
            "deletionPolicy on an export",
            json!({"deletionPolicy": "Retain"}),
            "spec.deletionPolicy",
        ),
        Row {
            name: "unknown field by server-side apply",
            request: Request::ApplyStrict(json!({"ossObject": "golden.raw"})),
            expect: Expect::Refused("spec.ossObject"),
        },
        // Through kubectl, as a user sees it.
        Row {
            name: "kubectl apply of an unknown format",
            request: Request::Kubectl(&["apply"], json!({"imageFormat": "iso"})),
            expect: Expect::Refused("spec.imageFormat"),
        },
        Row {
            name: "kubectl apply of a qcow2 export",
            request: Request::Kubectl(
                &["apply"],
                json!({"imageFormat": "qcow2", "ossPrefix": "golden"}),
            ),
            expect: Expect::Stored,
        },
        // Changes of an object with every optional field set.
        change(
            "change regionId",
            Base::Full,
            json!({"regionId": "cn-beijing"}),
            Expect::Refused("spec.regionId is immutable"),
        ),
        change(
            "change imageId",
            Base::Full,
            json!({"imageId": "m-other0001"}),
            Expect::Refused("spec.imageId is immutable"),
        ),
        change(
            "change ossBucket",
            Base::Full,
            json!({"ossBucket": "other-bucket"}),
            Expect::Refused("spec.ossBucket is immutable"),
        ),
        change(
            "change ossPrefix",
            Base::Full,
            json!({"ossPrefix": "other"}),
            Expect::Refused("spec.ossPrefix is immutable"),
        ),
        change(
            "remove ossPrefix",
            Base::Full,
            json!({"ossPrefix": null}),
            Expect::Refused("spec.ossPrefix is immutable"),
        ),
        change(
            "change imageFormat",
            Base::Full,
            json!({"imageFormat": "vhd"}),
            Expect::Refused("spec.imageFormat is immutable"),
        ),
        change(
            "remove imageFormat",
            Base::Full,
            json!({"imageFormat": null}),
            Expect::Refused("spec.imageFormat is immutable"),
        ),
        Row {
            name: "change with an unknown field under strict validation",
            request: Request::Change {
                base: Base::Full,
                patch: json!({"spec": {"ossPrefx": "golden"}}),
                strict: true,
            },
            expect: Expect::Refused("spec.ossPrefx"),
        },
        // Changes of an object with only the required fields.
        change(
            "add ossPrefix",
            Base::Bare,
            json!({"ossPrefix": "golden"}),
            Expect::Refused("spec.ossPrefix is immutable"),
        ),
        change(
            "add imageFormat",
            Base::Bare,
            json!({"imageFormat": "raw"}),
            Expect::Refused("spec.imageFormat is immutable"),
        ),
    ];
    [
        own,
        region_rows("regionId", "spec.regionId"),
        bucket_rows(|bucket| json!({ "ossBucket": bucket }), "spec.ossBucket"),
        credentials_rows(),
        vec![missing_spec(), labels_only_change()],
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[tokio::test]
async fn apiserver_admits_exactly_the_documented_image_copies() {
    admits_exactly(&image_copy(), copy_rows()).await;
}

#[tokio::test]
async fn apiserver_admits_exactly_the_documented_image_imports() {
    admits_exactly(&image_import(), import_rows()).await;
}

#[tokio::test]
async fn apiserver_admits_exactly_the_documented_image_exports() {
    admits_exactly(&image_export(), export_rows()).await;
}

#[tokio::test]
async fn apiserver_admits_exactly_the_documented_image_replications() {
    admits_exactly(&image_replication(), replication_rows()).await;
}

/// Sends every row as an object of `kind` to a fresh namespace holding the two change bases;
/// fails listing every row the apiserver answered otherwise than the row expects.
async fn admits_exactly(kind: &Kind, rows: Vec<Row>) {
    let client = support::apiserver().client().await;
    support::install_crds(&client).await;
    let namespace = support::fresh_namespace(&client, "admission").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &kind.resource);

    for base in [Base::Full, Base::Bare] {
        let object: DynamicObject =
            serde_json::from_value(kind.manifest(base.object_name(), &base.spec(kind)))
                .expect("a manifest is a DynamicObject");
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("create {} {}: {e}", kind.name, base.object_name()));
    }

    let mut failures = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let object_name = format!("row-{index}");
        let outcome = send(&client, &api, kind, &namespace, &object_name, &row.request).await;
        if let Err(problem) = judge(row, outcome) {
            failures.push(format!("{}: {problem}", row.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{}: {} of {} rows failed:\n{}",
        kind.name,
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// The manifests in examples/ are valid under strict field validation, and `kubectl get
/// ecs-images` (the category) and the short names show every kind.
#[tokio::test]
async fn examples_are_admitted_and_every_kind_is_listed_under_ecs_images() {
    let client = support::apiserver().client().await;
    support::install_crds(&client).await;
    let namespace = support::fresh_namespace(&client, "examples").await;
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    kubectl_stdout(&[
        "apply",
        "--validate=strict",
        "-n",
        &namespace,
        "-f",
        examples,
    ])
    .await;

    let listed = kubectl_stdout(&["get", "ecs-images", "-n", &namespace, "-o", "name"]).await;
    let mut names: Vec<&str> = listed.lines().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "imagecopy.imageops.dev/golden-to-beijing",
            "imagecopy.imageops.dev/golden-to-shanghai",
            "imagecopy.imageops.dev/golden-to-singapore",
            "imageexport.imageops.dev/golden-to-oss",
            "imageimport.imageops.dev/golden-from-oss",
            "imagereplication.imageops.dev/golden-everywhere",
        ],
        "kubectl get ecs-images"
    );
    let by_short_names = kubectl_stdout(&[
        "get",
        "imgcp,imgimp,imgexp,imgrep",
        "-n",
        &namespace,
        "-o",
        "name",
    ])
    .await;
    assert_eq!(
        by_short_names.lines().count(),
        names.len(),
        "kubectl get imgcp,imgimp,imgexp,imgrep:\n{by_short_names}"
    );
}

/// `kubectl ARGS` against the test apiserver; its stdout, or a panic with its stderr.
async fn kubectl_stdout(args: &[&str]) -> String {
    let output = tokio::process::Command::new(support::kubectl_bin())
        .arg(format!(
            "--kubeconfig={}",
            support::apiserver().kubeconfig.display()
        ))
        .args(args)
        .output()
        .await
        .expect("run kubectl");
    assert!(
        output.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("kubectl prints UTF-8")
}

async fn send(
    client: &Client,
    api: &Api<DynamicObject>,
    kind: &Kind,
    namespace: &str,
    object_name: &str,
    request: &Request,
) -> Outcome {
    let answer = match request {
        Request::Create(spec) => {
            let object: DynamicObject = serde_json::from_value(kind.manifest(object_name, spec))
                .expect("a manifest is a DynamicObject");
            api.create(&PostParams::default(), &object).await
        }
        Request::CreateWithoutSpec => {
            let mut manifest = kind.manifest(object_name, &json!({}));
            manifest
                .as_object_mut()
                .expect("a manifest is an object")
                .remove("spec");
            let object: DynamicObject =
                serde_json::from_value(manifest).expect("a manifest is a DynamicObject");
            api.create(&PostParams::default(), &object).await
        }
        Request::CreateStrict(spec) => {
            // kube's PostParams has no fieldValidation, so this POST is built by hand.
            let url = format!("{}?fieldValidation=Strict", api.resource_url());
            let body =
                serde_json::to_vec(&kind.manifest(object_name, spec)).expect("JSON manifest");
            let request = http::Request::post(url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body)
                .expect("POST request");
            client.request::<DynamicObject>(request).await
        }
        Request::ApplyStrict(spec) => {
            api.patch(
                object_name,
                &PatchParams::apply(FIELD_MANAGER).validation_strict(),
                &Patch::Apply(kind.manifest(object_name, spec)),
            )
            .await
        }
        Request::Kubectl(args, spec) => {
            let manifest = kind.manifest(object_name, spec);
            return kubectl(args, namespace, &manifest).await;
        }
        Request::Change {
            base,
            patch,
            strict,
        } => {
            let mut params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            if *strict {
                params = params.validation_strict();
            }
            api.patch(base.object_name(), &params, &Patch::Merge(patch))
                .await
        }
    };
    match answer {
        Ok(object) => Outcome::Stored(serde_json::to_value(object).expect("object as JSON")),
        Err(kube::Error::Api(status)) => Outcome::Refused {
            code: Some(status.code),
            message: status.message.clone(),
        },
        Err(other) => panic!("request to the apiserver failed: {other}"),
    }
}

/// `kubectl ARGS -n NAMESPACE -o json -f -` with `manifest`.
async fn kubectl(args: &[&str], namespace: &str, manifest: &Value) -> Outcome {
    let mut child = tokio::process::Command::new(support::kubectl_bin())
        .arg(format!(
            "--kubeconfig={}",
            support::apiserver().kubeconfig.display()
        ))
        .args(args)
        .args(["-n", namespace, "-o", "json", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl");
    let manifest = serde_json::to_vec(manifest).expect("JSON");
    let mut input = child.stdin.take().expect("kubectl stdin is piped");
    input
        .write_all(&manifest)
        .await
        .expect("write kubectl stdin");
    drop(input);
    let output = child.wait_with_output().await.expect("run kubectl");
    if output.status.success() {
        Outcome::Stored(
            serde_json::from_slice(&output.stdout).expect("kubectl -o json prints JSON"),
        )
    } else {
        Outcome::Refused {
            code: None,
            message: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Whether the apiserver answered `row` as it must; the problem if not.
fn judge(row: &Row, outcome: Outcome) -> Result<(), String> {
    match (&row.expect, outcome) {
        (Expect::Refused(text), Outcome::Refused { code, message }) => {
            let expected_codes = refusal_codes(&row.request);
            if let Some(code) = code
                && !expected_codes.contains(&code)
            {
                return Err(format!(
                    "refused with HTTP {code}, expected one of {expected_codes:?}: {message}"
                ));
            }
            if !message.contains(text) {
                return Err(format!(
                    "refused, but the message lacks {text:?}: {message}"
                ));
            }
            Ok(())
        }
        (Expect::Refused(text), Outcome::Stored(_)) => {
            Err(format!("stored, expected a refusal naming {text:?}"))
        }
        (Expect::Stored | Expect::Defaulted(_), Outcome::Refused { message, .. }) => {
            Err(format!("refused: {message}"))
        }
        (Expect::Stored, Outcome::Stored(object)) => stored_as_sent(&object, &sent(row), ""),
        (Expect::Defaulted(defaults), Outcome::Stored(object)) => {
            stored_as_sent(&object, &sent(row), "")?;
            stored_as_sent(&object, &json!({ "spec": defaults }), "")
                .map_err(|problem| format!("not defaulted: {problem}"))
        }
    }
}

/// What `row` sent that the stored object must show.
fn sent(row: &Row) -> Value {
    match &row.request {
        Request::Create(spec)
        | Request::CreateStrict(spec)
        | Request::ApplyStrict(spec)
        | Request::Kubectl(_, spec) => json!({ "spec": spec }),
        Request::CreateWithoutSpec => json!({}),
        Request::Change { patch, .. } => patch.clone(),
    }
}

/// The HTTP statuses a refusal of `request` may have. Schema and CEL violations are 422
/// Invalid, and so is an unknown field in a strictly validated patch (the patched object fails
/// to decode); an unknown field in a strictly validated create is 400 Bad Request. A server-side
/// apply naming a field the schema lacks fails before validation with 500 (kubernetes/kubernetes
/// issue 139253, to become 400).
fn refusal_codes(request: &Request) -> &'static [u16] {
    match request {
        Request::CreateStrict(_) => &[400],
        Request::ApplyStrict(_) => &[400, 500],
        _ => &[422],
    }
}

/// Every field of `sent` is in `stored` with the same value, and every `null` in `sent` is
/// absent from `stored`: nothing was pruned, defaulted over or altered.
fn stored_as_sent(stored: &Value, sent: &Value, path: &str) -> Result<(), String> {
    match sent {
        Value::Object(fields) => {
            for (key, value) in fields {
                let field_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match (stored.get(key), value) {
                    (None, Value::Null) => {}
                    (Some(found), Value::Null) => {
                        return Err(format!("{field_path} was removed but is stored as {found}"));
                    }
                    (None, _) => {
                        return Err(format!("{field_path} is missing from the stored object"));
                    }
                    (Some(found), value) => stored_as_sent(found, value, &field_path)?,
                }
            }
            Ok(())
        }
        value if stored == value => Ok(()),
        value => Err(format!("{path} is stored as {stored}, sent {value}")),
    }
}
