//! What the real kube-apiserver admits as an `ImageCopy`, row by row: every documented input
//! rule, wrong types, unknown fields under strict field validation and changes to existing
//! objects are refused with a message naming the offending field; the valid edge cases are
//! stored exactly as sent. All rows run in one test against one namespace; a failure lists
//! every failing row by name.

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;

use ecs_image_operator::api::ImageCopy;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use support::stage::{SOURCE_REGION, manifest};

/// ECS allows 20 tags per image; the operator adds its two owner tags.
const MAX_TAGS: usize = 18;
/// Field manager of the server-side applies and patches this test sends.
const FIELD_MANAGER: &str = "admission-test";

/// What the apiserver must answer.
enum Expect {
    /// Refused with a message containing this text: the offending field's path, or for a
    /// change of an immutable field `spec.<field> is immutable`.
    Refused(&'static str),
    /// Stored, with every field the request set (or removed) as the request said.
    Stored,
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

    fn spec(self) -> Value {
        match self {
            Base::Full => json!({
                "destinationImageName": "golden-2026-11",
                "destinationDescription": "golden image",
                "encrypted": true,
                "kmsKeyId": "key-1",
                "resourceGroupId": "rg-platform",
                "tags": {"team": "platform"},
                "deletionPolicy": "Delete",
                "credentialsSecretRef": {"name": "ecs-credentials"},
            }),
            Base::Bare => json!({}),
        }
    }
}

/// How a row reaches the apiserver.
enum Request {
    /// POST of the default manifest with these spec fields merged in (`null` removes one).
    Create(Value),
    /// POST of this whole manifest.
    CreateManifest(Value),
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

fn tags(count: usize) -> BTreeMap<String, String> {
    (0..count)
        .map(|i| (format!("team{i}"), "platform".to_owned()))
        .collect()
}

fn rows() -> Vec<Row> {
    let name_of = |length: usize| format!("g{}", "0".repeat(length - 1));
    vec![
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
        // Name of the new image.
        refused(
            "name of 1 character",
            json!({"destinationImageName": "g"}),
            "spec.destinationImageName",
        ),
        refused(
            "name of 129 characters",
            json!({"destinationImageName": name_of(129)}),
            "spec.destinationImageName",
        ),
        refused(
            "name starting with a digit",
            json!({"destinationImageName": "2026-golden"}),
            "spec.destinationImageName",
        ),
        refused(
            "name starting with a dash",
            json!({"destinationImageName": "-golden"}),
            "spec.destinationImageName",
        ),
        refused(
            "name with a space",
            json!({"destinationImageName": "golden image"}),
            "spec.destinationImageName",
        ),
        refused(
            "name starting with aliyun",
            json!({"destinationImageName": "aliyun-golden"}),
            "spec.destinationImageName",
        ),
        refused(
            "name starting with acs:",
            json!({"destinationImageName": "acs:golden"}),
            "spec.destinationImageName",
        ),
        refused(
            "name containing http://",
            json!({"destinationImageName": "golden-http://x"}),
            "spec.destinationImageName",
        ),
        refused(
            "name containing https://",
            json!({"destinationImageName": "golden-https://x"}),
            "spec.destinationImageName",
        ),
        stored(
            "name of exactly 2 characters",
            json!({"destinationImageName": "go"}),
        ),
        stored(
            "name of exactly 128 characters",
            json!({"destinationImageName": name_of(128)}),
        ),
        stored(
            "name starting with a Chinese character",
            json!({"destinationImageName": "金色镜像-2026"}),
        ),
        stored(
            "name with . : _ - inside",
            json!({"destinationImageName": "golden.v1:base_image-2026"}),
        ),
        // Description of the new image.
        refused(
            "description of 1 character",
            json!({"destinationDescription": "d"}),
            "spec.destinationDescription",
        ),
        refused(
            "description of 257 characters",
            json!({"destinationDescription": "d".repeat(257)}),
            "spec.destinationDescription",
        ),
        refused(
            "description starting with http://",
            json!({"destinationDescription": "http://example.com/golden"}),
            "spec.destinationDescription",
        ),
        refused(
            "description starting with https://",
            json!({"destinationDescription": "https://example.com/golden"}),
            "spec.destinationDescription",
        ),
        stored(
            "description of exactly 2 characters",
            json!({"destinationDescription": "ok"}),
        ),
        stored(
            "description of exactly 256 characters",
            json!({"destinationDescription": "d".repeat(256)}),
        ),
        stored(
            "description of 256 Chinese characters",
            json!({"destinationDescription": "镜".repeat(256)}),
        ),
        stored(
            "description with a link after its start",
            json!({"destinationDescription": "built from https://example.com/golden"}),
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
        // Tags.
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
        // Deletion policy and credentials.
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
        stored("deletionPolicy Retain", json!({"deletionPolicy": "Retain"})),
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
        refused(
            "credentialsSecretRef without a name",
            json!({"credentialsSecretRef": {}}),
            "spec.credentialsSecretRef.name",
        ),
        Row {
            name: "missing spec",
            request: Request::CreateManifest(json!({
                "apiVersion": "imageops.dev/v1alpha1",
                "kind": "ImageCopy",
                "metadata": {"name": "no-spec"},
            })),
            expect: Expect::Refused("spec: Required value"),
        },
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
        refused(
            "string for an object",
            json!({"credentialsSecretRef": "ecs-credentials"}),
            "spec.credentialsSecretRef",
        ),
        refused(
            "bool for an enum",
            json!({"deletionPolicy": true}),
            "spec.deletionPolicy",
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
        unknown_field(
            "namespace in credentialsSecretRef",
            json!({"credentialsSecretRef": {"name": "ecs-credentials", "namespace": "kube-system"}}),
            "spec.credentialsSecretRef.namespace",
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
        Row {
            name: "change with an unknown field under strict validation",
            request: Request::Change {
                base: Base::Full,
                patch: json!({"spec": {"destRegionId": "cn-beijing"}}),
                strict: true,
            },
            expect: Expect::Refused("spec.destRegionId"),
        },
        change(
            "change deletionPolicy",
            Base::Full,
            json!({"deletionPolicy": "Retain"}),
            Expect::Stored,
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
        Row {
            name: "change labels only",
            request: Request::Change {
                base: Base::Full,
                patch: json!({"metadata": {"labels": {"team": "platform"}}}),
                strict: false,
            },
            expect: Expect::Stored,
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
        change(
            "add tags",
            Base::Bare,
            json!({"tags": {"team": "platform"}}),
            Expect::Refused("spec.tags is immutable"),
        ),
        change(
            "add deletionPolicy and credentialsSecretRef",
            Base::Bare,
            json!({"deletionPolicy": "Retain", "credentialsSecretRef": {"name": "ecs-credentials"}}),
            Expect::Stored,
        ),
    ]
}

#[tokio::test]
async fn apiserver_admits_exactly_the_documented_image_copies() {
    let client = support::apiserver().client().await;
    support::install_crds(&client).await;
    let namespace = support::fresh_namespace(&client, "admission").await;
    let resource = ApiResource::erase::<ImageCopy>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);

    for base in [Base::Full, Base::Bare] {
        let object: DynamicObject =
            serde_json::from_value(manifest(base.object_name(), base.spec()))
                .expect("a manifest is a DynamicObject");
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("create {}: {e}", base.object_name()));
    }

    let rows = rows();
    let mut failures = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let object_name = format!("row-{index}");
        let outcome = send(&client, &api, &namespace, &object_name, &row.request).await;
        if let Err(problem) = judge(row, outcome) {
            failures.push(format!("{}: {problem}", row.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

async fn send(
    client: &Client,
    api: &Api<DynamicObject>,
    namespace: &str,
    object_name: &str,
    request: &Request,
) -> Outcome {
    let answer = match request {
        Request::Create(spec) => {
            let object: DynamicObject = serde_json::from_value(manifest(object_name, spec.clone()))
                .expect("a manifest is a DynamicObject");
            api.create(&PostParams::default(), &object).await
        }
        Request::CreateManifest(manifest) => {
            let object: DynamicObject =
                serde_json::from_value(manifest.clone()).expect("a manifest is a DynamicObject");
            api.create(&PostParams::default(), &object).await
        }
        Request::CreateStrict(spec) => {
            // kube's PostParams has no fieldValidation, so this POST is built by hand.
            let url = format!(
                "{}?fieldValidation=Strict",
                ImageCopy::url_path(&(), Some(namespace))
            );
            let body =
                serde_json::to_vec(&manifest(object_name, spec.clone())).expect("JSON manifest");
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
                &Patch::Apply(manifest(object_name, spec.clone())),
            )
            .await
        }
        Request::Kubectl(args, spec) => return kubectl(args, namespace, object_name, spec).await,
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

/// `kubectl ARGS -n NAMESPACE -o json -f -` with the default manifest and `spec_overrides`.
async fn kubectl(
    args: &[&str],
    namespace: &str,
    object_name: &str,
    spec_overrides: &Value,
) -> Outcome {
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
    let manifest =
        serde_json::to_vec(&manifest(object_name, spec_overrides.clone())).expect("JSON");
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
        (Expect::Stored, Outcome::Refused { message, .. }) => Err(format!("refused: {message}")),
        (Expect::Stored, Outcome::Stored(object)) => {
            let sent = match &row.request {
                Request::Create(spec)
                | Request::CreateStrict(spec)
                | Request::ApplyStrict(spec)
                | Request::Kubectl(_, spec) => json!({ "spec": spec }),
                Request::CreateManifest(manifest) => manifest.clone(),
                Request::Change { patch, .. } => patch.clone(),
            };
            stored_as_sent(&object, &sent, "")
        }
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
