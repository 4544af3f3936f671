//! The ECS emulator over real HTTP: an in-process server on 127.0.0.1:0, requests signed with
//! the same `ecs::sign` primitives the client uses (V3 and V1), and the documented answers.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use ecs_image_operator::ecs::sign;
use ecs_image_operator::emulator::{self, EmulatorConfig, errors};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const ALL: &str = "Creating,Waiting,Available,UnAvailable,CreateFailed";

#[derive(Clone)]
struct Creds {
    id: String,
    secret: String,
    token: Option<String>,
}

fn test_key() -> Creds {
    Creds {
        id: "testid".into(),
        secret: "testsecret".into(),
        token: None,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Sig {
    V3,
    V1Get,
    V1Post,
}

struct Req {
    action: String,
    params: Vec<(String, String)>,
    sig: Sig,
    creds: Creds,
    age: TimeDelta,
    nonce: Option<String>,
    tamper: bool,
    /// How long the client waits for an answer; unbounded when absent.
    timeout: Option<Duration>,
}

fn req(action: &str, params: &[(&str, &str)]) -> Req {
    Req {
        action: action.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        sig: Sig::V3,
        creds: test_key(),
        age: TimeDelta::zero(),
        nonce: None,
        tamper: false,
        timeout: None,
    }
}

struct Emu {
    base: String,
    http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

async fn start(config: EmulatorConfig) -> Emu {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(emulator::serve(config, listener, async {
        let _ = stopped.await;
    }));
    Emu {
        base: format!("http://{address}"),
        http: reqwest::Client::new(),
        _stop: stop,
    }
}

fn config(copy_seconds: f64, concurrency: usize) -> EmulatorConfig {
    EmulatorConfig {
        copy_duration: Duration::from_secs_f64(copy_seconds),
        task_duration: Duration::from_secs_f64(copy_seconds),
        region_concurrency: concurrency,
        ..EmulatorConfig::default()
    }
}

fn tamper(signature: &str) -> String {
    let mut chars: Vec<char> = signature.chars().collect();
    chars[0] = if chars[0] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

impl Emu {
    async fn send(&self, r: Req) -> (u16, Value) {
        self.try_send(r).await.unwrap()
    }

    /// Sends a signed request; fails only when the client gives up (a timeout) or the
    /// connection breaks.
    async fn try_send(&self, r: Req) -> reqwest::Result<(u16, Value)> {
        let date = sign::timestamp(Utc::now() - r.age);
        let nonce = r
            .nonce
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let request = match r.sig {
            Sig::V3 => {
                let hashed = sign::sha256_hex(b"");
                let host = self.base.trim_start_matches("http://").to_string();
                let mut headers = vec![
                    ("host".to_string(), host),
                    ("x-acs-action".to_string(), r.action.clone()),
                    ("x-acs-content-sha256".to_string(), hashed.clone()),
                    ("x-acs-date".to_string(), date),
                    ("x-acs-signature-nonce".to_string(), nonce),
                    ("x-acs-version".to_string(), "2014-05-26".to_string()),
                ];
                if let Some(token) = &r.creds.token {
                    headers.push(("x-acs-security-token".to_string(), token.clone()));
                }
                headers.sort();
                let signed: Vec<String> = headers.iter().map(|(n, _)| n.clone()).collect();
                let canonical = sign::v3_canonical_request(&sign::V3Input {
                    method: "POST",
                    canonical_uri: "/",
                    query: &r.params,
                    headers: &headers,
                    signed_headers: &signed,
                    hashed_payload: &hashed,
                });
                let mut signature =
                    sign::v3_signature(&r.creds.secret, &sign::v3_string_to_sign(&canonical));
                if r.tamper {
                    signature = tamper(&signature);
                }
                let mut builder = self
                    .http
                    .post(format!(
                        "{}/?{}",
                        self.base,
                        sign::canonical_query(&r.params)
                    ))
                    .header(
                        "authorization",
                        sign::v3_authorization(&r.creds.id, &signed, &signature),
                    );
                for (name, value) in headers.iter().filter(|(n, _)| n != "host") {
                    builder = builder.header(name, value);
                }
                builder
            }
            Sig::V1Get | Sig::V1Post => {
                let method = if r.sig == Sig::V1Get { "GET" } else { "POST" };
                let mut all = r.params.clone();
                for (k, v) in [
                    ("Action", r.action.as_str()),
                    ("Version", "2014-05-26"),
                    ("Format", "JSON"),
                    ("AccessKeyId", r.creds.id.as_str()),
                    ("SignatureMethod", "HMAC-SHA1"),
                    ("SignatureVersion", "1.0"),
                    ("SignatureNonce", nonce.as_str()),
                    ("Timestamp", date.as_str()),
                ] {
                    all.push((k.to_string(), v.to_string()));
                }
                if let Some(token) = &r.creds.token {
                    all.push(("SecurityToken".to_string(), token.clone()));
                }
                let mut signature =
                    sign::v1_signature(&r.creds.secret, &sign::v1_string_to_sign(method, &all));
                if r.tamper {
                    signature = tamper(&signature);
                }
                all.push(("Signature".to_string(), signature));
                let encoded = sign::canonical_query(&all);
                if r.sig == Sig::V1Get {
                    self.http.get(format!("{}/?{encoded}", self.base))
                } else {
                    self.http
                        .post(format!("{}/", self.base))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(encoded)
                }
            }
        };
        let request = match r.timeout {
            Some(timeout) => request.timeout(timeout),
            None => request,
        };
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    async fn ok(&self, action: &str, params: &[(&str, &str)]) -> Value {
        let (status, body) = self.send(req(action, params)).await;
        assert_eq!(status, 200, "{action} {params:?}: {body}");
        assert!(body["RequestId"].is_string());
        body
    }

    /// `(HTTP status, Code)` of a call that must fail.
    async fn fails(&self, action: &str, params: &[(&str, &str)]) -> (u16, String) {
        failure(self.send(req(action, params)).await)
    }

    async fn copy(&self, destination: &str, extra: &[(&str, &str)]) -> String {
        let mut params = vec![
            ("RegionId", "cn-hangzhou"),
            ("ImageId", "m-demo0001"),
            ("DestinationRegionId", destination),
        ];
        params.extend_from_slice(extra);
        self.ok("CopyImage", &params).await["ImageId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `(Status, Progress)` of an image, looked up across every status.
    async fn image(&self, region: &str, id: &str) -> Option<(String, u32)> {
        let body = self
            .ok(
                "DescribeImages",
                &[("RegionId", region), ("ImageId", id), ("Status", ALL)],
            )
            .await;
        body["Images"]["Image"]
            .as_array()
            .unwrap()
            .first()
            .map(|i| {
                (
                    i["Status"].as_str().unwrap().to_string(),
                    i["Progress"]
                        .as_str()
                        .unwrap()
                        .trim_end_matches('%')
                        .parse()
                        .unwrap(),
                )
            })
    }

    async fn wait_status(&self, region: &str, id: &str, status: &str) {
        for _ in 0..100 {
            if self
                .image(region, id)
                .await
                .is_some_and(|(s, _)| s == status)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{id} never became {status}");
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut builder = self
            .http
            .request(method, format!("{}/_emulator/{path}", self.base));
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        let response = builder.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn assume_role(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .http
            .post(format!(
                "{}/?Action=AssumeRoleWithOIDC&Version=2015-04-01&Format=JSON",
                self.base
            ))
            .form(form)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

fn failure((status, body): (u16, Value)) -> (u16, String) {
    assert_ne!(status, 200, "expected an error: {body}");
    for field in ["RequestId", "HostId", "Code", "Message", "Recommend"] {
        assert!(body[field].is_string(), "{field} missing in {body}");
    }
    (status, body["Code"].as_str().unwrap().to_string())
}

fn statuses(body: &Value) -> Vec<(String, String)> {
    body["Images"]["Image"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["ImageId"].as_str().unwrap().to_string(),
                i["Status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn copies_queue_per_region_with_concurrency_one() {
    let emu = start(config(1.0, 1)).await;
    let a = emu.copy("cn-shanghai", &[]).await;
    let b = emu.copy("cn-shanghai", &[]).await;
    assert!(a.starts_with("m-") && a.len() == 22);
    let (status, first) = emu.image("cn-shanghai", &a).await.unwrap();
    assert_eq!(status, "Creating");
    assert_eq!(
        emu.image("cn-shanghai", &b).await.unwrap(),
        ("Waiting".into(), 0)
    );
    // Not Available yet, so invisible without a Status filter.
    let default = emu
        .ok("DescribeImages", &[("RegionId", "cn-shanghai")])
        .await;
    assert_eq!(default["TotalCount"], 0);
    // Another destination region has its own queue.
    let other = emu.copy("cn-beijing", &[]).await;
    assert_eq!(emu.image("cn-beijing", &other).await.unwrap().0, "Creating");

    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, later) = emu.image("cn-shanghai", &a).await.unwrap();
    assert_eq!(status, "Creating");
    assert!(later > first && later < 100, "{first} -> {later}");

    emu.wait_status("cn-shanghai", &a, "Available").await;
    assert_eq!(emu.image("cn-shanghai", &a).await.unwrap().1, 100);
    assert_eq!(emu.image("cn-shanghai", &b).await.unwrap().0, "Creating");
    let listed = emu
        .ok("DescribeImages", &[("RegionId", "cn-shanghai")])
        .await;
    assert_eq!(
        statuses(&listed),
        vec![(a.clone(), "Available".to_string())]
    );
    let image = &listed["Images"]["Image"][0];
    assert_eq!(image["IsCopied"], true);
    assert_eq!(image["Usable"], true);
    assert_eq!(image["ImageOwnerAlias"], "self");
}

#[tokio::test]
async fn concurrency_two_runs_two_copies() {
    let emu = start(config(5.0, 2)).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(emu.copy("cn-shenzhen", &[]).await);
    }
    let mut seen = Vec::new();
    for id in &ids {
        seen.push(emu.image("cn-shenzhen", id).await.unwrap().0);
    }
    assert_eq!(seen, ["Creating", "Creating", "Waiting"]);
}

#[tokio::test]
async fn cancel_copy_image_rules() {
    let emu = start(config(0.6, 1)).await;
    let a = emu.copy("cn-shanghai", &[]).await;
    let b = emu.copy("cn-shanghai", &[]).await;
    // Waiting and Creating copies can both be cancelled; the image goes away.
    assert_eq!(cancel(&emu, &b).await, (200, String::new()));
    assert!(emu.image("cn-shanghai", &b).await.is_none());
    assert_eq!(cancel(&emu, &a).await, (200, String::new()));
    assert!(emu.image("cn-shanghai", &a).await.is_none());

    let c = emu.copy("cn-shanghai", &[]).await;
    emu.wait_status("cn-shanghai", &c, "Available").await;
    let (status, body) = emu
        .send(req(
            "CancelCopyImage",
            &[("RegionId", "cn-shanghai"), ("ImageId", &c)],
        ))
        .await;
    assert_eq!(
        (status, body["Code"].as_str().unwrap()),
        (400, "IncorrectImageStatus")
    );
    assert_eq!(body["Message"], "The image is copied finished.");

    assert_eq!(
        emu.fails(
            "CancelCopyImage",
            &[("RegionId", "cn-hangzhou"), ("ImageId", "m-demo0001")]
        )
        .await,
        (400, "ImageCreatedNotFromCopy".into())
    );
    assert_eq!(
        emu.fails(
            "CancelCopyImage",
            &[("RegionId", "cn-shanghai"), ("ImageId", "m-nope")]
        )
        .await,
        (404, "InvalidImageId.NotFound".into())
    );
    assert_eq!(
        emu.fails(
            "CancelCopyImage",
            &[("RegionId", "mars-1"), ("ImageId", "m-nope")]
        )
        .await,
        (404, "InvalidRegionId.NotFound".into())
    );

    // A copy in flight can be neither deleted nor, with the fault on, cancelled.
    let d = emu.copy("cn-shanghai", &[]).await;
    let (status, _) = emu
        .admin(
            reqwest::Method::POST,
            "faults",
            Some(json!({ "cancelNotSupported": true })),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(cancel(&emu, &d).await, (400, "CancelNotSupported".into()));
    assert_eq!(
        emu.fails(
            "DeleteImage",
            &[("RegionId", "cn-shanghai"), ("ImageId", &d)]
        )
        .await,
        (403, "OperationDenied.ImageCopying".into())
    );
    // Deleting a finished copy works; deleting what does not exist is ignored.
    emu.ok(
        "DeleteImage",
        &[("RegionId", "cn-shanghai"), ("ImageId", &c)],
    )
    .await;
    assert!(emu.image("cn-shanghai", &c).await.is_none());
    emu.ok(
        "DeleteImage",
        &[("RegionId", "cn-shanghai"), ("ImageId", "m-gone")],
    )
    .await;
}

/// CancelCopyImage in cn-shanghai: `(200, "")` or the error's `(status, Code)`.
async fn cancel(emu: &Emu, id: &str) -> (u16, String) {
    let (status, body) = emu
        .send(req(
            "CancelCopyImage",
            &[("RegionId", "cn-shanghai"), ("ImageId", id)],
        ))
        .await;
    if status == 200 {
        (200, String::new())
    } else {
        failure((status, body))
    }
}

#[tokio::test]
async fn client_token_makes_copy_idempotent() {
    let emu = start(config(30.0, 1)).await;
    let params = [
        ("ClientToken", "uid-1234"),
        ("DestinationImageName", "copy-one"),
        ("Tag.1.Key", "imageops.dev/owner-uid"),
        ("Tag.1.Value", "1234"),
    ];
    let first = emu.copy("cn-shanghai", &params).await;
    let again = emu.copy("cn-shanghai", &params).await;
    assert_eq!(first, again);
    let (_, images) = emu.admin(reqwest::Method::GET, "images", None).await;
    let copies: Vec<&Value> = images["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["regionId"] == "cn-shanghai")
        .collect();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0]["tags"]["imageops.dev/owner-uid"], "1234");
    assert_eq!(copies[0]["status"], "Creating");
    let (_, calls) = emu.admin(reqwest::Method::GET, "calls", None).await;
    let tokens: Vec<&Value> = calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "CopyImage")
        .map(|c| &c["clientToken"])
        .collect();
    assert_eq!(
        tokens,
        vec!["uid-1234", "uid-1234"],
        "the call log names the token"
    );

    let (status, code) = emu
        .fails(
            "CopyImage",
            &[
                ("RegionId", "cn-hangzhou"),
                ("ImageId", "m-demo0001"),
                ("DestinationRegionId", "cn-beijing"),
                ("ClientToken", "uid-1234"),
            ],
        )
        .await;
    assert_eq!(
        (status, code.as_str()),
        (400, "IdempotentParameterMismatch")
    );
}

#[tokio::test]
async fn copy_image_validation_errors() {
    let emu = start(config(30.0, 1)).await;
    emu.admin(
        reqwest::Method::POST,
        "images",
        Some(json!({ "regionId": "cn-hangzhou", "imageId": "m-busy", "imageName": "busy", "status": "Creating" })),
    )
    .await;
    emu.copy("cn-shanghai", &[("DestinationImageName", "taken")])
        .await;
    let base = |extra: &[(&'static str, &'static str)]| {
        let mut p = vec![
            ("RegionId", "cn-hangzhou"),
            ("ImageId", "m-demo0001"),
            ("DestinationRegionId", "cn-shanghai"),
        ];
        for (k, v) in extra {
            p.retain(|(key, _)| key != k);
            p.push((k, v));
        }
        p
    };
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            base(&[("ImageId", "m-missing")]),
            404,
            "InvalidImageId.NotFound",
        ),
        (base(&[("ImageId", "m-busy")]), 400, "IncorrectImageStatus"),
        (
            base(&[("DestinationRegionId", "cn-hangzhou")]),
            403,
            "IncorrectDestinationRegion",
        ),
        (
            base(&[("DestinationRegionId", "mars-1")]),
            400,
            "DestinationRegion.NotFound",
        ),
        (
            base(&[("RegionId", "mars-1")]),
            400,
            "SourceRegion.NotFound",
        ),
        (
            base(&[("DestinationImageName", "1bad")]),
            400,
            "InvalidImageName.Malformed",
        ),
        (
            base(&[("DestinationImageName", "aliyun-x")]),
            400,
            "InvalidImageName.Malformed",
        ),
        (
            base(&[("DestinationImageName", "taken")]),
            400,
            "InvalidImageName.Duplicated",
        ),
        (
            base(&[("DestinationDescription", "http://x")]),
            400,
            "InvalidDescription.Malformed",
        ),
        (
            base(&[("KMSKeyId", "key-1")]),
            400,
            "InvalidParameter.EncryptedIllegal",
        ),
        (
            base(&[("Tag.1.Key", "acs:x")]),
            400,
            "InvalidTagKey.Malformed",
        ),
        (base(&[("DryRun", "true")]), 400, "DryRunOperation"),
        (vec![("RegionId", "cn-hangzhou")], 400, "MissingParameter"),
    ];
    for (params, status, code) in cases {
        assert_eq!(
            emu.fails("CopyImage", &params).await,
            (status, code.to_string()),
            "{params:?}"
        );
    }
    // KMSKeyId is fine once Encrypted is set.
    emu.copy(
        "cn-beijing",
        &[("Encrypted", "true"), ("KMSKeyId", "key-1")],
    )
    .await;
}

#[tokio::test]
async fn describe_images_filters_and_pages() {
    let emu = start(config(30.0, 1)).await;
    for n in 0..25 {
        let team = if n % 5 == 0 { "a" } else { "b" };
        let (status, _) = emu
            .admin(
                reqwest::Method::POST,
                "images",
                Some(json!({
                    "regionId": "cn-beijing",
                    "imageId": format!("m-seed{n:02}"),
                    "imageName": format!("seed-{n}"),
                    "tags": { "team": team },
                })),
            )
            .await;
        assert_eq!(status, 201);
    }
    let page3 = emu
        .ok(
            "DescribeImages",
            &[
                ("RegionId", "cn-beijing"),
                ("PageNumber", "3"),
                ("PageSize", "10"),
            ],
        )
        .await;
    assert_eq!(page3["TotalCount"], 25);
    assert_eq!(page3["PageNumber"], 3);
    assert_eq!(page3["Images"]["Image"].as_array().unwrap().len(), 5);
    let default_page = emu
        .ok("DescribeImages", &[("RegionId", "cn-beijing")])
        .await;
    assert_eq!(default_page["PageSize"], 10);
    assert_eq!(
        default_page["Images"]["Image"].as_array().unwrap().len(),
        10
    );

    let team_a = emu
        .ok(
            "DescribeImages",
            &[
                ("RegionId", "cn-beijing"),
                ("Tag.1.Key", "team"),
                ("Tag.1.Value", "a"),
                ("PageSize", "100"),
            ],
        )
        .await;
    assert_eq!(team_a["TotalCount"], 5);
    let both_tags = emu
        .ok(
            "DescribeImages",
            &[
                ("RegionId", "cn-beijing"),
                ("Tag.1.Key", "team"),
                ("Tag.1.Value", "a"),
                ("Tag.2.Key", "other"),
            ],
        )
        .await;
    assert_eq!(both_tags["TotalCount"], 0);
    let by_ids = emu
        .ok(
            "DescribeImages",
            &[
                ("RegionId", "cn-beijing"),
                ("ImageId", "m-seed01,m-seed02,m-nope"),
            ],
        )
        .await;
    assert_eq!(by_ids["TotalCount"], 2);
    assert_eq!(
        emu.fails(
            "DescribeImages",
            &[("RegionId", "cn-beijing"), ("PageSize", "101")]
        )
        .await
        .0,
        400
    );
    assert_eq!(
        emu.fails("DescribeImages", &[("RegionId", "xx-nowhere-1")])
            .await,
        (404, "InvalidRegionId.NotFound".into())
    );

    // Non-Available images only show up when asked for.
    emu.admin(
        reqwest::Method::POST,
        "images",
        Some(json!({ "regionId": "cn-beijing", "imageId": "m-creating", "status": "Creating" })),
    )
    .await;
    let creating = emu
        .ok(
            "DescribeImages",
            &[("RegionId", "cn-beijing"), ("Status", "Creating")],
        )
        .await;
    assert_eq!(
        statuses(&creating),
        vec![("m-creating".into(), "Creating".into())]
    );
    let everything = emu
        .ok(
            "DescribeImages",
            &[
                ("RegionId", "cn-beijing"),
                ("Status", "ALL"),
                ("PageSize", "100"),
            ],
        )
        .await;
    assert_eq!(everything["TotalCount"], 26);
}

#[tokio::test]
async fn signatures_timestamps_and_nonces_are_checked() {
    let emu = start(config(30.0, 1)).await;
    let describe = || req("DescribeRegions", &[]);
    for sig in [Sig::V3, Sig::V1Get, Sig::V1Post] {
        let (status, _) = emu.send(Req { sig, ..describe() }).await;
        assert_eq!(status, 200);

        let (status, body) = emu
            .send(Req {
                sig,
                tamper: true,
                ..describe()
            })
            .await;
        assert_eq!(
            (status, body["Code"].as_str().unwrap()),
            (400, "SignatureDoesNotMatch")
        );
        let message = body["Message"].as_str().unwrap();
        assert!(message.contains("server string to sign is:"), "{message}");
        if sig == Sig::V1Get {
            assert!(
                message.contains("server string to sign is:GET&%2F&"),
                "{message}"
            );
        }

        let unknown = Creds {
            id: "nobody".into(),
            ..test_key()
        };
        assert_eq!(
            failure(
                emu.send(Req {
                    sig,
                    creds: unknown,
                    ..describe()
                })
                .await
            ),
            (404, "InvalidAccessKeyId.NotFound".into())
        );
        let wrong_secret = Creds {
            secret: "wrong".into(),
            ..test_key()
        };
        assert_eq!(
            failure(
                emu.send(Req {
                    sig,
                    creds: wrong_secret,
                    ..describe()
                })
                .await
            )
            .1,
            "SignatureDoesNotMatch"
        );

        let nonce = Some(uuid::Uuid::new_v4().to_string());
        let (status, _) = emu
            .send(Req {
                sig,
                nonce: nonce.clone(),
                ..describe()
            })
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            failure(
                emu.send(Req {
                    sig,
                    nonce,
                    ..describe()
                })
                .await
            ),
            (400, "SignatureNonceUsed".into())
        );

        assert_eq!(
            failure(
                emu.send(Req {
                    sig,
                    age: TimeDelta::minutes(40),
                    ..describe()
                })
                .await
            ),
            (400, "IllegalTimestamp".into())
        );
    }
    // V3 allows 15 minutes of skew, V1 31.
    let (v1_status, _) = emu
        .send(Req {
            sig: Sig::V1Get,
            age: TimeDelta::minutes(20),
            ..describe()
        })
        .await;
    assert_eq!(v1_status, 200);
    assert_eq!(
        failure(
            emu.send(Req {
                age: TimeDelta::minutes(20),
                ..describe()
            })
            .await
        ),
        (400, "IllegalTimestamp".into())
    );

    // Unsigned, unknown action, wrong version.
    let unsigned = emu
        .http
        .get(format!(
            "{}/?Action=DescribeRegions&Version=2014-05-26",
            emu.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 400);
    let body: Value = unsigned.json().await.unwrap();
    assert_eq!(body["Code"], "IncompleteSignature");
    assert_eq!(
        emu.fails("RunInstances", &[("RegionId", "cn-hangzhou")])
            .await,
        (404, "InvalidAction.NotFound".into())
    );
    let unsigned_v = emu
        .http
        .get(format!(
            "{}/?Action=DescribeRegions&Version=2099-01-01",
            emu.base
        ))
        .send()
        .await
        .unwrap();
    let body: Value = unsigned_v.json().await.unwrap();
    assert_eq!(body["Code"], "InvalidVersion");
}

#[tokio::test]
async fn sts_credentials_from_assume_role_with_oidc() {
    let emu = start(config(30.0, 1)).await;
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
    let form = |token: &'static str, duration: &'static str| {
        vec![
            ("RoleArn", "acs:ram::1234567890123456:role/image-operator"),
            (
                "OIDCProviderArn",
                "acs:ram::1234567890123456:oidc-provider/ack-rrsa-x",
            ),
            ("OIDCToken", token),
            ("RoleSessionName", "operator"),
            ("DurationSeconds", duration),
        ]
    };
    let (status, body) = emu.assume_role(&form(jwt, "900")).await;
    assert_eq!(status, 200, "{body}");
    let credentials = &body["Credentials"];
    assert!(
        credentials["AccessKeyId"]
            .as_str()
            .unwrap()
            .starts_with("STS.")
    );
    assert!(body["AssumedRoleUser"]["Arn"].is_string());
    let expiration = credentials["Expiration"].as_str().unwrap();
    assert!(chrono::NaiveDateTime::parse_from_str(expiration, "%Y-%m-%dT%H:%M:%SZ").is_ok());
    let sts = Creds {
        id: credentials["AccessKeyId"].as_str().unwrap().into(),
        secret: credentials["AccessKeySecret"].as_str().unwrap().into(),
        token: Some(credentials["SecurityToken"].as_str().unwrap().into()),
    };
    for sig in [Sig::V3, Sig::V1Get, Sig::V1Post] {
        let (status, body) = emu
            .send(Req {
                sig,
                creds: sts.clone(),
                ..req("DescribeRegions", &[])
            })
            .await;
        assert_eq!(status, 200, "{body}");
        let mismatched = Creds {
            token: Some("CAISnot-the-token".into()),
            ..sts.clone()
        };
        assert_eq!(
            failure(
                emu.send(Req {
                    sig,
                    creds: mismatched,
                    ..req("DescribeRegions", &[])
                })
                .await
            )
            .1,
            "InvalidSecurityToken.Malformed"
        );
        let long_term_with_token = Creds {
            token: sts.token.clone(),
            ..test_key()
        };
        assert_eq!(
            failure(
                emu.send(Req {
                    sig,
                    creds: long_term_with_token,
                    ..req("DescribeRegions", &[])
                })
                .await
            )
            .1,
            "InvalidSecurityToken.MismatchWithAccessKey"
        );
        let no_token = Creds {
            token: None,
            ..sts.clone()
        };
        assert_eq!(
            failure(
                emu.send(Req {
                    sig,
                    creds: no_token,
                    ..req("DescribeRegions", &[])
                })
                .await
            )
            .1,
            "MissingSecurityToken"
        );
    }

    assert_eq!(
        failure(emu.assume_role(&form("", "900")).await),
        (401, "AuthenticationFail.OIDCToken.Invalid".into())
    );
    assert_eq!(
        failure(emu.assume_role(&form("not-a-jwt", "900")).await),
        (401, "AuthenticationFail.OIDCToken.Invalid".into())
    );
    assert_eq!(
        failure(emu.assume_role(&form(jwt, "60")).await),
        (400, "InvalidParameter.DurationSeconds".into())
    );

    // Short-lived credentials from the admin API expire.
    let (status, short) = emu
        .admin(
            reqwest::Method::POST,
            "sts-credentials",
            Some(json!({ "durationSeconds": 1 })),
        )
        .await;
    assert_eq!(status, 200);
    let short = Creds {
        id: short["Credentials"]["AccessKeyId"].as_str().unwrap().into(),
        secret: short["Credentials"]["AccessKeySecret"]
            .as_str()
            .unwrap()
            .into(),
        token: Some(
            short["Credentials"]["SecurityToken"]
                .as_str()
                .unwrap()
                .into(),
        ),
    };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        failure(
            emu.send(Req {
                creds: short,
                ..req("DescribeRegions", &[])
            })
            .await
        ),
        (400, "InvalidSecurityToken.Expired".into())
    );
}

#[tokio::test]
async fn import_export_tasks_and_cancel_task() {
    let emu = start(config(0.6, 1)).await;
    let import = |bucket: &'static str| {
        [
            ("RegionId", "cn-hangzhou"),
            ("DiskDeviceMapping.1.OSSBucket", bucket),
            ("DiskDeviceMapping.1.OSSObject", "disk.qcow2"),
            ("DiskDeviceMapping.1.Format", "QCOW2"),
            ("Tag.1.Key", "imageops.dev/owner-uid"),
            ("Tag.1.Value", "u1"),
        ]
    };
    let first = emu.ok("ImportImage", &import("bucket-a")).await;
    let second = emu.ok("ImportImage", &import("bucket-b")).await;
    let task = |v: &Value| v["TaskId"].as_str().unwrap().to_string();
    let (t1, t2) = (task(&first), task(&second));
    let i1 = first["ImageId"].as_str().unwrap().to_string();
    let i2 = second["ImageId"].as_str().unwrap().to_string();
    assert!(t1.starts_with("t-"));

    let attr = |id: String| {
        let emu = &emu;
        async move {
            emu.ok(
                "DescribeTaskAttribute",
                &[("RegionId", "cn-hangzhou"), ("TaskId", &id)],
            )
            .await
        }
    };
    let a1 = attr(t1.clone()).await;
    assert_eq!(a1["TaskStatus"], "Processing");
    assert_eq!(a1["SupportCancel"], "true");
    assert_eq!(attr(t2.clone()).await["TaskStatus"], "Waiting");
    assert_eq!(emu.image("cn-hangzhou", &i1).await.unwrap().0, "Creating");
    assert_eq!(
        emu.fails(
            "DeleteImage",
            &[("RegionId", "cn-hangzhou"), ("ImageId", &i1)]
        )
        .await,
        (403, "ImageIsImporting".into())
    );

    emu.ok(
        "CancelTask",
        &[("RegionId", "cn-hangzhou"), ("TaskId", &t1)],
    )
    .await;
    assert!(emu.image("cn-hangzhou", &i1).await.is_none());
    assert_eq!(attr(t1.clone()).await["TaskStatus"], "Deleted");
    assert_eq!(
        emu.fails(
            "CancelTask",
            &[("RegionId", "cn-hangzhou"), ("TaskId", &t1)]
        )
        .await,
        (403, "InvalidTaskId.IncorrectTaskStatus".into())
    );
    assert_eq!(
        emu.fails(
            "CancelTask",
            &[("RegionId", "cn-hangzhou"), ("TaskId", "t-nope")]
        )
        .await,
        (400, "InvalidTaskId.NotFound".into())
    );
    assert_eq!(
        emu.fails(
            "CancelTask",
            &[("RegionId", "mars-1"), ("TaskId", "t-nope")]
        )
        .await,
        (400, "InvalidRegionId.NotFound".into())
    );
    assert_eq!(
        emu.fails("CancelTask", &[("RegionId", "cn-hangzhou")])
            .await,
        (400, "MissingParameter".into())
    );

    emu.wait_status("cn-hangzhou", &i2, "Available").await;
    let listed = emu
        .ok(
            "DescribeTasks",
            &[
                ("RegionId", "cn-hangzhou"),
                ("TaskAction", "ImportImage"),
                ("TaskStatus", "Finished"),
            ],
        )
        .await;
    let tasks = listed["TaskSet"]["Task"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["TaskId"], t2.as_str());
    assert_eq!(tasks[0]["SupportCancel"], "false");
    assert_eq!(tasks[0]["ResourceId"], i2.as_str());

    let export = emu
        .ok(
            "ExportImage",
            &[
                ("RegionId", "cn-hangzhou"),
                ("ImageId", &i2),
                ("OSSBucket", "exports"),
                ("OSSPrefix", "pre"),
                ("ImageFormat", "qcow2"),
            ],
        )
        .await;
    let t3 = task(&export);
    assert_eq!(
        emu.fails(
            "DeleteImage",
            &[("RegionId", "cn-hangzhou"), ("ImageId", &i2)]
        )
        .await,
        (403, "ImageIsExporting".into())
    );
    emu.admin(
        reqwest::Method::POST,
        "faults",
        Some(json!({ "cancelTaskFailed": true })),
    )
    .await;
    assert_eq!(
        emu.fails(
            "CancelTask",
            &[("RegionId", "cn-hangzhou"), ("TaskId", &t3)]
        )
        .await,
        (403, "CancelTaskFailed".into())
    );
    let a3 = attr(t3.clone()).await;
    assert_eq!(a3["TaskAction"], "ExportImage");
    let related =
        &a3["OperationProgressSet"]["OperationProgress"][0]["RelatedItemSet"]["RelatedItem"];
    assert_eq!(related[0]["Value"], "exports");
    assert_eq!(
        emu.fails(
            "ExportImage",
            &[
                ("RegionId", "cn-hangzhou"),
                ("ImageId", "m-nope"),
                ("OSSBucket", "b")
            ]
        )
        .await,
        (404, "InvalidImageId.NotFound".into())
    );
}

#[tokio::test]
async fn tags_regions_and_admin_api() {
    let emu = start(config(30.0, 1)).await;
    emu.ok(
        "TagResources",
        &[
            ("RegionId", "cn-hangzhou"),
            ("ResourceType", "image"),
            ("ResourceId.1", "m-demo0001"),
            ("Tag.1.Key", "env"),
            ("Tag.1.Value", "test"),
        ],
    )
    .await;
    let listed = emu
        .ok(
            "ListTagResources",
            &[
                ("RegionId", "cn-hangzhou"),
                ("ResourceType", "image"),
                ("Tag.1.Key", "env"),
                ("Tag.1.Value", "test"),
            ],
        )
        .await;
    assert_eq!(
        listed["TagResources"]["TagResource"],
        json!([{ "ResourceId": "m-demo0001", "ResourceType": "image", "TagKey": "env", "TagValue": "test" }])
    );
    assert_eq!(
        emu.fails(
            "TagResources",
            &[
                ("RegionId", "cn-hangzhou"),
                ("ResourceType", "image"),
                ("ResourceId.1", "m-nope"),
                ("Tag.1.Key", "env"),
            ],
        )
        .await,
        (404, "InvalidResourceId.NotFound".into())
    );

    let regions = emu
        .ok("DescribeRegions", &[("AcceptLanguage", "en-US")])
        .await;
    let list = regions["Regions"]["Region"].as_array().unwrap();
    assert!(list.iter().any(|r| r["RegionId"] == "ap-southeast-1"
        && r["LocalName"] == "Singapore"
        && r["Status"] == "available"));

    // Out-of-band deletion, seen by DescribeImages and by the admin listing.
    let copy = emu.copy("cn-shanghai", &[]).await;
    let (status, _) = emu
        .admin(
            reqwest::Method::DELETE,
            &format!("images/cn-shanghai/{copy}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert!(emu.image("cn-shanghai", &copy).await.is_none());
    let (_, images) = emu.admin(reqwest::Method::GET, "images", None).await;
    assert_eq!(
        images["images"],
        json!([{
            "regionId": "cn-hangzhou", "imageId": "m-demo0001", "imageName": "m-demo0001",
            "status": "Available", "progress": "100%", "tags": { "env": "test" },
            "isCopied": false, "sourceRegionId": "", "sourceImageId": "",
            "creationTime": images["images"][0]["creationTime"],
            "availableAt": images["images"][0]["availableAt"],
        }])
    );
    let (status, _) = emu
        .admin(reqwest::Method::DELETE, "images/cn-shanghai/m-gone", None)
        .await;
    assert_eq!(status, 404);

    // Faults.
    emu.admin(
        reqwest::Method::POST,
        "faults",
        Some(json!({ "throttleRate": 1.0 })),
    )
    .await;
    let (status, body) = emu.send(req("DescribeRegions", &[])).await;
    assert_eq!(
        (status, body["Code"].as_str().unwrap()),
        (400, "Throttling.User")
    );
    assert_eq!(
        body["Message"],
        "Request was denied due to user flow control."
    );
    emu.admin(
        reqwest::Method::POST,
        "faults",
        Some(json!({ "throttleRate": 0.0, "errorRate": 1.0 })),
    )
    .await;
    let (status, code) = failure(emu.send(req("DescribeRegions", &[])).await);
    assert!(
        (status, code.as_str()) == (503, "ServiceUnavailable")
            || (status, code.as_str()) == (500, "InternalError")
    );
    let (status, _) = emu
        .admin(
            reqwest::Method::POST,
            "faults",
            Some(json!({ "errorRate": 2.0 })),
        )
        .await;
    assert_eq!(status, 400);

    // Every ECS request is counted, rejected ones included.
    let (_, calls) = emu.admin(reqwest::Method::GET, "calls", None).await;
    assert_eq!(calls["counts"]["DescribeRegions"], 3);
    assert_eq!(calls["counts"]["TagResources"], 2);
    let rejected: Vec<&Value> = calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["code"] != "")
        .collect();
    assert_eq!(rejected.len(), 3);
    assert_eq!(rejected[0]["action"], "TagResources");
    assert_eq!(rejected[0]["regionId"], "cn-hangzhou");
    assert!(rejected[0]["at"].is_string());
    emu.admin(reqwest::Method::POST, "reset-calls", None).await;
    let (_, calls) = emu.admin(reqwest::Method::GET, "calls", None).await;
    assert_eq!(calls, json!({ "counts": {}, "calls": [] }));
}

// --- faults that play what a real cloud does ------------------------------------------------

impl Emu {
    /// `POST /_emulator/faults` that must be accepted; returns the resulting fault set.
    async fn faults(&self, patch: Value) -> Value {
        let (status, body) = self
            .admin(reqwest::Method::POST, "faults", Some(patch.clone()))
            .await;
        assert_eq!(status, 200, "faults {patch}: {body}");
        body
    }

    /// The ids DescribeImages lists in `region` for `params` (any status).
    async fn listed(&self, region: &str, params: &[(&str, &str)]) -> Vec<String> {
        let mut all = vec![("RegionId", region), ("Status", ALL), ("PageSize", "100")];
        all.extend_from_slice(params);
        statuses(&self.ok("DescribeImages", &all).await)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// The ids ListTagResources lists for images in `region` carrying `key=value`.
    async fn tagged(&self, region: &str, key: &str, value: &str) -> Vec<String> {
        let body = self
            .ok(
                "ListTagResources",
                &[
                    ("RegionId", region),
                    ("ResourceType", "image"),
                    ("Tag.1.Key", key),
                    ("Tag.1.Value", value),
                ],
            )
            .await;
        body["TagResources"]["TagResource"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["ResourceId"].as_str().unwrap().to_string())
            .collect()
    }

    /// The single DescribeImages item for `id`.
    async fn item(&self, region: &str, id: &str) -> Value {
        let body = self
            .ok(
                "DescribeImages",
                &[("RegionId", region), ("ImageId", id), ("Status", ALL)],
            )
            .await;
        body["Images"]["Image"][0].clone()
    }
}

const OWNER: [(&str, &str); 2] = [("Tag.1.Key", "owner"), ("Tag.1.Value", "u1")];

#[tokio::test]
async fn tag_index_lag_hides_images_from_tag_queries_only() {
    let emu = start(config(30.0, 1)).await;
    emu.faults(json!({ "tagIndexLagSeconds": 600.0 })).await;
    let copy = emu.copy("cn-shanghai", &OWNER).await;
    assert_eq!(
        emu.listed("cn-shanghai", &OWNER).await,
        Vec::<String>::new()
    );
    assert_eq!(
        emu.tagged("cn-shanghai", "owner", "u1").await,
        Vec::<String>::new()
    );
    // Without a tag filter the image shows at once.
    assert_eq!(
        emu.listed("cn-shanghai", &[("ImageId", &copy)]).await,
        vec![copy.clone()]
    );
    assert_eq!(emu.listed("cn-shanghai", &[]).await, vec![copy.clone()]);

    // The lag is applied when a query is answered, so a shorter one shows the image as soon as
    // it has passed since the copy was created.
    emu.faults(json!({ "tagIndexLagSeconds": 0.3 })).await;
    let mut visible = false;
    for _ in 0..60 {
        if emu.listed("cn-shanghai", &OWNER).await == vec![copy.clone()] {
            visible = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(visible, "the tag index never caught up");
    assert_eq!(
        emu.tagged("cn-shanghai", "owner", "u1").await,
        vec![copy.clone()]
    );

    // Re-tagging puts the image behind the index again.
    emu.faults(json!({ "tagIndexLagSeconds": 600.0 })).await;
    emu.ok(
        "TagResources",
        &[
            ("RegionId", "cn-shanghai"),
            ("ResourceType", "image"),
            ("ResourceId.1", &copy),
            ("Tag.1.Key", "team"),
            ("Tag.1.Value", "platform"),
        ],
    )
    .await;
    assert_eq!(
        emu.listed("cn-shanghai", &OWNER).await,
        Vec::<String>::new()
    );
    assert_eq!(
        emu.listed("cn-shanghai", &[("ImageId", &copy)]).await,
        vec![copy.clone()]
    );
    emu.faults(json!({ "tagIndexLagSeconds": 0.0 })).await;
    assert_eq!(emu.listed("cn-shanghai", &OWNER).await, vec![copy]);
}

#[tokio::test]
async fn ignore_client_token_creates_an_image_per_call() {
    let emu = start(config(30.0, 5)).await;
    emu.faults(json!({ "ignoreClientToken": true })).await;
    let token = [("ClientToken", "uid-1")];
    let first = emu.copy("cn-shanghai", &token).await;
    let second = emu.copy("cn-shanghai", &token).await;
    assert_ne!(first, second);
    let import = [
        ("RegionId", "cn-hangzhou"),
        ("DiskDeviceMapping.1.OSSBucket", "bucket"),
        ("DiskDeviceMapping.1.OSSObject", "disk.raw"),
        ("ClientToken", "uid-2"),
    ];
    let a = emu.ok("ImportImage", &import).await;
    let b = emu.ok("ImportImage", &import).await;
    assert_ne!(a["ImageId"], b["ImageId"]);
    assert_ne!(a["TaskId"], b["TaskId"]);
    let (_, images) = emu.admin(reqwest::Method::GET, "images", None).await;
    assert_eq!(images["images"].as_array().unwrap().len(), 5);

    // Honoured again once the fault is off.
    emu.faults(json!({ "ignoreClientToken": false })).await;
    let third = emu.copy("cn-shanghai", &[("ClientToken", "uid-3")]).await;
    assert_eq!(
        emu.copy("cn-shanghai", &[("ClientToken", "uid-3")]).await,
        third
    );
}

#[tokio::test]
async fn a_fresh_copy_is_not_usable_for_the_usable_delay() {
    let emu = start(config(0.0, 1)).await;
    // By default an Available copy is usable at once.
    let early = emu.copy("cn-shanghai", &[]).await;
    let item = emu.item("cn-shanghai", &early).await;
    assert_eq!(
        (&item["Status"], &item["Usable"]),
        (&json!("Available"), &json!(true))
    );

    emu.faults(json!({ "usableDelaySeconds": 600.0 })).await;
    let copy = emu.copy("cn-shanghai", &[]).await;
    let item = emu.item("cn-shanghai", &copy).await;
    assert_eq!(
        (&item["Status"], &item["Usable"]),
        (&json!("Available"), &json!(false))
    );
    // Only copies wait: the seeded source is usable.
    assert_eq!(emu.item("cn-hangzhou", "m-demo0001").await["Usable"], true);

    emu.faults(json!({ "usableDelaySeconds": 0.3 })).await;
    let mut usable = false;
    for _ in 0..60 {
        if emu.item("cn-shanghai", &copy).await["Usable"] == true {
            usable = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(usable, "the copy never became usable");
}

#[tokio::test]
async fn admin_images_tell_when_each_image_turned_available() {
    let emu = start(config(0.3, 1)).await;
    let started = Utc::now();
    let copy = emu.copy("cn-shanghai", &[]).await;
    let available_at = |images: &Value, id: &str| {
        images["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["imageId"] == id)
            .unwrap()["availableAt"]
            .clone()
    };
    let (_, images) = emu.admin(reqwest::Method::GET, "images", None).await;
    assert_eq!(available_at(&images, &copy), Value::Null);
    emu.wait_status("cn-shanghai", &copy, "Available").await;
    let (_, images) = emu.admin(reqwest::Method::GET, "images", None).await;
    let at = available_at(&images, &copy);
    let at = at.as_str().unwrap();
    // RFC 3339 with milliseconds, e.g. 2026-01-01T00:00:00.300Z.
    assert_eq!(at.len(), 24, "{at}");
    let at = chrono::DateTime::parse_from_rfc3339(at).unwrap();
    let took = at.with_timezone(&Utc) - started;
    assert!(
        took >= TimeDelta::milliseconds(300) && took < TimeDelta::seconds(5),
        "{took}"
    );
    assert!(available_at(&images, "m-demo0001").is_string());
    let (_, seeded) = emu
        .admin(
            reqwest::Method::POST,
            "images",
            Some(json!({ "regionId": "cn-hangzhou", "status": "CreateFailed" })),
        )
        .await;
    assert_eq!(seeded["availableAt"], Value::Null);
}

#[tokio::test]
async fn injected_errors_follow_count_rate_and_region() {
    let emu = start(config(30.0, 1)).await;
    let delete = |region: &'static str| [("RegionId", region), ("ImageId", "m-absent")];
    let faults = emu
        .faults(json!({ "inject": [
            { "action": "DeleteImage", "code": "ImageUsingByInstance", "count": 2,
              "regionId": "cn-shanghai" },
            { "action": "CancelTask", "code": "CancelTaskFailed", "rate": 0.0 },
        ]}))
        .await;
    assert_eq!(faults["inject"][0]["count"], 2);
    assert_eq!(faults["inject"][1]["rate"], 0.0);
    // Another region is not affected (DeleteImage of a missing image succeeds).
    emu.ok("DeleteImage", &delete("cn-hangzhou")).await;

    // A badly signed request still fails on its signature and does not use the rule up.
    let mut forged = req("DeleteImage", &delete("cn-shanghai"));
    forged.tamper = true;
    assert_eq!(
        failure(emu.send(forged).await),
        (400, "SignatureDoesNotMatch".to_string())
    );

    for _ in 0..2 {
        let (status, body) = emu.send(req("DeleteImage", &delete("cn-shanghai"))).await;
        assert_eq!(
            failure((status, body.clone())),
            (403, "ImageUsingByInstance".to_string())
        );
        assert_eq!(
            body["Message"],
            "The specified image has been used to create instances."
        );
    }
    emu.ok("DeleteImage", &delete("cn-shanghai")).await;
    let (_, faults) = emu.admin(reqwest::Method::GET, "faults", None).await;
    assert_eq!(faults["inject"].as_array().unwrap().len(), 1, "{faults}");

    // Rate 0 never fires; rate 1 without a count fires until cleared.
    let cancel = [("RegionId", "cn-hangzhou"), ("TaskId", "t-absent")];
    assert_eq!(
        emu.fails("CancelTask", &cancel).await,
        (400, "InvalidTaskId.NotFound".to_string())
    );
    emu.faults(json!({ "inject": [{ "action": "CancelTask", "code": "CancelTaskFailed" }] }))
        .await;
    for _ in 0..3 {
        assert_eq!(
            emu.fails("CancelTask", &cancel).await,
            (403, "CancelTaskFailed".to_string())
        );
    }
    emu.faults(json!({ "inject": [] })).await;
    assert_eq!(
        emu.fails("CancelTask", &cancel).await,
        (400, "InvalidTaskId.NotFound".to_string())
    );

    // The call log shows injected answers like any other.
    let (_, calls) = emu.admin(reqwest::Method::GET, "calls", None).await;
    let codes: Vec<&str> = calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "DeleteImage")
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "",
            "SignatureDoesNotMatch",
            "ImageUsingByInstance",
            "ImageUsingByInstance",
            ""
        ]
    );
}

#[tokio::test]
async fn bad_fault_patches_are_refused_with_the_reason() {
    let emu = start(config(30.0, 1)).await;
    for (patch, named) in [
        (
            json!({ "inject": [{ "action": "DeleteImage", "code": "ImageUsingByInstanse" }] }),
            "ImageUsingByInstanse",
        ),
        (
            json!({ "inject": [{ "action": "DeleteImages", "code": "Forbidden" }] }),
            "DeleteImages",
        ),
        (
            json!({ "inject": [{ "action": "DeleteImage", "code": "Forbidden", "regionId": "mars-1" }] }),
            "mars-1",
        ),
        (
            json!({ "inject": [{ "action": "DeleteImage", "code": "Forbidden", "times": 1 }] }),
            "times",
        ),
        (json!({ "tagIndexLag": 1 }), "tagIndexLag"),
        (json!({ "hangRate": 1.5 }), "hangRate"),
        (json!({ "usableDelaySeconds": -1 }), "usableDelaySeconds"),
    ] {
        let (status, body) = emu
            .admin(reqwest::Method::POST, "faults", Some(patch.clone()))
            .await;
        assert_eq!(status, 400, "{patch}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(named), "{patch}: {error}");
    }
    let (_, faults) = emu.admin(reqwest::Method::GET, "faults", None).await;
    assert_eq!(faults["inject"], json!([]));
    assert_eq!(faults["hangRate"], 0.0);
}

#[tokio::test]
async fn every_documented_code_is_injectable_with_its_status() {
    let emu = start(config(30.0, 1)).await;
    // The table itself is checked against the documents by the emulator's unit tests; here every
    // row goes through the HTTP path (the first row of a code is the one answered).
    let mut seen = std::collections::BTreeSet::new();
    for row in errors::DOCUMENTED {
        let Some(action) = row.action else { continue };
        if !seen.insert((action, row.code)) {
            continue;
        }
        let (status, code) = (row.status, row.code);
        emu.faults(json!({ "inject": [{ "action": action, "code": code, "count": 1 }] }))
            .await;
        let answer = emu.send(req(action, &[("RegionId", "cn-hangzhou")])).await;
        assert_eq!(failure(answer), (status, code.to_string()), "{action}");
    }
    // CopyImage also documents InternalError as 403; a rule can ask for it.
    emu.faults(json!({ "inject": [{
        "action": "CopyImage", "code": "InternalError", "count": 1, "httpStatus": 403,
    }]}))
    .await;
    assert_eq!(
        failure(
            emu.send(req("CopyImage", &[("RegionId", "cn-hangzhou")]))
                .await
        ),
        (403, "InternalError".to_string())
    );
}

#[tokio::test]
async fn listings_can_drop_or_garble_items() {
    let emu = start(config(30.0, 1)).await;
    for name in ["one", "two", "three"] {
        let (status, _) = emu
            .admin(
                reqwest::Method::POST,
                "images",
                Some(json!({ "regionId": "cn-hangzhou", "imageName": name })),
            )
            .await;
        assert_eq!(status, 201);
    }
    let listing = [("RegionId", "cn-hangzhou")];

    emu.faults(json!({ "listingDropRate": 1.0 })).await;
    let body = emu.ok("DescribeImages", &listing).await;
    assert_eq!(body["TotalCount"], 4);
    assert_eq!(body["Images"]["Image"], json!([]));

    emu.faults(json!({ "listingDropRate": 0.0, "malformedItemRate": 1.0 }))
        .await;
    let body = emu.ok("DescribeImages", &listing).await;
    let items = body["Images"]["Image"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    for item in items {
        assert!(
            item["ImageId"] == json!({ "bad": true }) || item["Status"] == 42,
            "{item}"
        );
        // Only one field is broken; the rest of the item is as usual.
        assert!(item["ImageName"].is_string());
    }

    emu.faults(json!({ "malformedItemRate": 0.0 })).await;
    let body = emu.ok("DescribeImages", &listing).await;
    assert!(
        body["Images"]["Image"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["ImageId"].is_string() && i["Status"] == "Available")
    );
}

#[tokio::test]
async fn hung_requests_outlast_a_client_timeout() {
    let emu = start(config(30.0, 1)).await;
    emu.faults(json!({ "hangRate": 1.0, "hangMs": 1500 })).await;
    let mut impatient = req("DescribeRegions", &[]);
    impatient.timeout = Some(Duration::from_millis(300));
    let error = emu.try_send(impatient).await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    // A patient client gets the answer once the hang is over.
    emu.admin(reqwest::Method::POST, "reset-calls", None).await;
    let started = std::time::Instant::now();
    let sent_at = Utc::now();
    emu.ok("DescribeRegions", &[]).await;
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // It is handled, and logged, when the hang ends rather than when it arrived.
    let (_, calls) = emu.admin(reqwest::Method::GET, "calls", None).await;
    // The last call: the abandoned one may or may not have been logged before it.
    let handled_at = calls["calls"].as_array().unwrap().last().unwrap()["at"]
        .as_str()
        .unwrap();
    let handled_at = chrono::DateTime::parse_from_rfc3339(handled_at).unwrap();
    assert!(handled_at.with_timezone(&Utc) - sent_at >= TimeDelta::milliseconds(1500));

    emu.faults(json!({ "hangRate": 0.0 })).await;
    let mut impatient = req("DescribeRegions", &[]);
    impatient.timeout = Some(Duration::from_millis(1000));
    assert_eq!(emu.try_send(impatient).await.unwrap().0, 200);
}

// --- import/export tasks: listing filters, progress, failures, CancelTask's refusals -------

impl Emu {
    /// Starts an import in cn-hangzhou; returns `(image id, task id)`.
    async fn import(&self, extra: &[(&str, &str)]) -> (String, String) {
        let mut params = vec![
            ("RegionId", "cn-hangzhou"),
            ("DiskDeviceMapping.1.OSSBucket", "bucket"),
            ("DiskDeviceMapping.1.OSSObject", "disk.qcow2"),
        ];
        params.extend_from_slice(extra);
        let body = self.ok("ImportImage", &params).await;
        (
            body["ImageId"].as_str().unwrap().to_string(),
            body["TaskId"].as_str().unwrap().to_string(),
        )
    }

    async fn export(&self, image_id: &str) -> String {
        self.ok(
            "ExportImage",
            &[
                ("RegionId", "cn-hangzhou"),
                ("ImageId", image_id),
                ("OSSBucket", "exports"),
            ],
        )
        .await["TaskId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The task ids DescribeTasks lists in cn-hangzhou for `params`, and its TotalCount.
    async fn task_ids(&self, params: &[(&str, &str)]) -> (Vec<String>, u64) {
        let mut all = vec![("RegionId", "cn-hangzhou")];
        all.extend_from_slice(params);
        let body = self.ok("DescribeTasks", &all).await;
        let ids = body["TaskSet"]["Task"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["TaskId"].as_str().unwrap().to_string())
            .collect();
        (ids, body["TotalCount"].as_u64().unwrap())
    }

    async fn task_attribute(&self, task_id: &str) -> Value {
        self.ok(
            "DescribeTaskAttribute",
            &[("RegionId", "cn-hangzhou"), ("TaskId", task_id)],
        )
        .await
    }

    /// `POST /_emulator/tasks` that must be accepted; returns the seeded task's id.
    async fn seed_task(&self, body: Value) -> String {
        let (status, task) = self
            .admin(reqwest::Method::POST, "tasks", Some(body.clone()))
            .await;
        assert_eq!(status, 201, "seed {body}: {task}");
        task["taskId"].as_str().unwrap().to_string()
    }

    async fn wait_task_status(&self, task_id: &str, status: &str) -> Value {
        for _ in 0..100 {
            let attribute = self.task_attribute(task_id).await;
            if attribute["TaskStatus"] == status {
                return attribute;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{task_id} never became {status}");
    }
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn describe_tasks_filters_by_id_resource_action_status_and_pages() {
    let emu = start(config(30.0, 5)).await;
    let (image_a, import_a) = emu.import(&[]).await;
    let (_, import_b) = emu.import(&[]).await;
    let (_, import_c) = emu.import(&[]).await;
    let export = emu.export("m-demo0001").await;
    let redeploy = emu
        .seed_task(
            json!({ "regionId": "cn-hangzhou", "taskAction": "RedeployInstance",
                           "resourceId": "i-web1" }),
        )
        .await;
    let finished = emu
        .seed_task(
            json!({ "regionId": "cn-hangzhou", "taskAction": "ExportImage",
                           "taskStatus": "Finished", "resourceId": "m-demo0001" }),
        )
        .await;
    // Another region's tasks never show.
    emu.seed_task(json!({ "regionId": "cn-shanghai", "taskAction": "ImportImage" }))
        .await;

    let ids = format!("{import_a},{export}");
    assert_eq!(
        sorted(emu.task_ids(&[("TaskIds", &ids)]).await.0),
        sorted(vec![import_a.clone(), export.clone()])
    );
    // ResourceIds as the official SDK sends them (ResourceIds.N) and comma-separated.
    assert_eq!(
        emu.task_ids(&[("ResourceIds.1", &image_a)]).await.0,
        vec![import_a.clone()]
    );
    assert_eq!(
        sorted(
            emu.task_ids(&[("ResourceIds", "m-demo0001,i-web1")])
                .await
                .0
        ),
        sorted(vec![export.clone(), finished.clone(), redeploy.clone()])
    );
    assert_eq!(
        sorted(emu.task_ids(&[("TaskAction", "ExportImage")]).await.0),
        sorted(vec![export.clone(), finished.clone()])
    );
    assert_eq!(
        emu.task_ids(&[("TaskStatus", "Finished")]).await.0,
        vec![finished.clone()]
    );
    assert_eq!(
        emu.task_ids(&[("TaskStatus", "Processing"), ("TaskAction", "ImportImage")])
            .await
            .1,
        3
    );
    assert_eq!(emu.task_ids(&[("TaskStatus", "Failed")]).await.1, 0);
    // "Other values do not take effect."
    assert_eq!(emu.task_ids(&[("TaskStatus", "Paused")]).await.1, 6);

    // Paging: PageSize at most 100, TotalCount counts every match.
    let mut paged = Vec::new();
    for page in ["1", "2", "3"] {
        let (ids, total) = emu
            .task_ids(&[("PageSize", "2"), ("PageNumber", page)])
            .await;
        assert_eq!(total, 6);
        assert_eq!(ids.len(), 2);
        paged.extend(ids);
    }
    assert_eq!(
        sorted(paged),
        sorted(vec![
            import_a.clone(),
            import_b,
            import_c,
            export.clone(),
            redeploy,
            finished
        ])
    );
    assert_eq!(
        emu.task_ids(&[("PageSize", "2"), ("PageNumber", "4")])
            .await
            .0,
        Vec::<String>::new()
    );

    let listed = emu
        .ok(
            "DescribeTasks",
            &[("RegionId", "cn-hangzhou"), ("TaskIds", &import_a)],
        )
        .await;
    let task = &listed["TaskSet"]["Task"][0];
    assert_eq!(task["TaskAction"], "ImportImage");
    assert_eq!(task["TaskStatus"], "Processing");
    assert_eq!(task["SupportCancel"], "true");
    assert_eq!(task["ResourceId"], image_a.as_str());
    assert_eq!(task["FinishedTime"], "");
    let created = task["CreationTime"].as_str().unwrap();
    assert!(
        created.len() == 17 && created.ends_with('Z'),
        "minute precision: {created}"
    );

    let many: Vec<String> = (0..101).map(|n| format!("t-{n}")).collect();
    let many = many.join(",");
    for bad in [
        vec![("PageSize", "101")],
        vec![("TaskIds", many.as_str())],
        vec![("TaskAction", "CopyImage")],
    ] {
        let mut params = vec![("RegionId", "cn-hangzhou")];
        params.extend(bad);
        assert_eq!(
            emu.fails("DescribeTasks", &params).await,
            (400, "InvalidParameter".into())
        );
    }
}

#[tokio::test]
async fn task_progress_rises_and_a_failed_task_says_why() {
    let emu = start(config(1.2, 5)).await;
    emu.faults(json!({ "failTasks": [
        { "action": "ImportImage", "count": 1 },
        { "action": "ExportImage", "errorCode": "ExportImage.RoleNotAuthorized",
          "errorMsg": "The export role may not write to the bucket." }
    ]}))
    .await;
    let (failing_image, failing) = emu.import(&[]).await;
    let (image, import) = emu.import(&[]).await;

    let first = emu.task_attribute(&import).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let later = emu.task_attribute(&import).await;
    let percent = |v: &Value| -> u32 {
        v["TaskProcess"]
            .as_str()
            .unwrap()
            .trim_end_matches('%')
            .parse()
            .unwrap()
    };
    assert!(
        percent(&later) > percent(&first) && percent(&later) < 100,
        "{} then {}",
        first["TaskProcess"],
        later["TaskProcess"]
    );
    assert_eq!(
        later["OperationProgressSet"]["OperationProgress"][0]["ErrorCode"],
        ""
    );

    // The failing import stops halfway, says why, and leaves its image CreateFailed.
    let failed = emu.wait_task_status(&failing, "Failed").await;
    assert_eq!(failed["TaskProcess"], "50%");
    assert_eq!(failed["SupportCancel"], "false");
    assert_eq!(failed["FailedCount"], 1);
    assert_ne!(failed["FinishedTime"], "");
    let operation = &failed["OperationProgressSet"]["OperationProgress"][0];
    assert_eq!(operation["OperationStatus"], "Failed");
    assert_eq!(operation["ErrorCode"], "ImportImage.OssObjectNotFound");
    assert!(!operation["ErrorMsg"].as_str().unwrap().is_empty());
    assert_eq!(
        emu.image("cn-hangzhou", &failing_image).await.unwrap().0,
        "CreateFailed"
    );
    assert_eq!(
        emu.task_ids(&[("TaskStatus", "Failed")]).await.0,
        vec![failing.clone()]
    );
    assert_eq!(
        emu.fails(
            "CancelTask",
            &[("RegionId", "cn-hangzhou"), ("TaskId", &failing)]
        )
        .await,
        (403, "InvalidTaskId.IncorrectTaskStatus".into())
    );
    // The failed import's image can be deleted like any finished one.
    emu.ok(
        "DeleteImage",
        &[("RegionId", "cn-hangzhou"), ("ImageId", &failing_image)],
    )
    .await;
    assert!(emu.image("cn-hangzhou", &failing_image).await.is_none());

    // The rule counted down to nothing: the other import finishes.
    let done = emu.wait_task_status(&import, "Finished").await;
    assert_eq!(done["TaskProcess"], "100%");
    assert_eq!(done["SuccessCount"], 1);
    assert_eq!(
        done["OperationProgressSet"]["OperationProgress"][0]["OperationStatus"],
        "Success"
    );
    assert_eq!(
        emu.image("cn-hangzhou", &image).await.unwrap().0,
        "Available"
    );

    // A failed export names the rule's code; the image stays Available and exportable.
    let export = emu.export(&image).await;
    let failed = emu.wait_task_status(&export, "Failed").await;
    let operation = &failed["OperationProgressSet"]["OperationProgress"][0];
    assert_eq!(operation["ErrorCode"], "ExportImage.RoleNotAuthorized");
    assert_eq!(
        operation["ErrorMsg"],
        "The export role may not write to the bucket."
    );
    assert_eq!(
        emu.image("cn-hangzhou", &image).await.unwrap().0,
        "Available"
    );
    let (_, tasks) = emu.admin(reqwest::Method::GET, "tasks", None).await;
    let listed = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["taskId"] == export.as_str())
        .unwrap()
        .clone();
    assert_eq!(listed["taskStatus"], "Failed");
    assert_eq!(listed["errorCode"], "ExportImage.RoleNotAuthorized");
    emu.faults(json!({ "failTasks": [] })).await;
    let again = emu.export(&image).await;
    emu.wait_task_status(&again, "Finished").await;
}

#[tokio::test]
async fn cancel_task_answers_each_documented_refusal() {
    let emu = start(config(30.0, 5)).await;
    let cancel = |id: String| {
        let emu = &emu;
        async move {
            let (status, body) = emu
                .send(req(
                    "CancelTask",
                    &[("RegionId", "cn-hangzhou"), ("TaskId", &id)],
                ))
                .await;
            (status, body["Code"].clone(), body["Message"].clone())
        }
    };
    let redeploy = emu
        .seed_task(
            json!({ "regionId": "cn-hangzhou", "taskAction": "RedeployInstance",
                           "taskStatus": "Processing", "progress": 40 }),
        )
        .await;
    assert_eq!(
        cancel(redeploy.clone()).await,
        (
            403,
            json!("InvalidTaskId.TaskActionNotSupport"),
            json!("The specified task action not support.")
        )
    );
    let attribute = emu.task_attribute(&redeploy).await;
    assert_eq!(
        (
            &attribute["TaskStatus"],
            &attribute["TaskProcess"],
            &attribute["SupportCancel"]
        ),
        (&json!("Processing"), &json!("40%"), &json!("false"))
    );
    for status in ["Finished", "Failed", "Deleted"] {
        let done = emu
            .seed_task(
                json!({ "regionId": "cn-hangzhou", "taskAction": "ImportImage",
                               "taskStatus": status }),
            )
            .await;
        assert_eq!(
            cancel(done).await,
            (
                403,
                json!("InvalidTaskId.IncorrectTaskStatus"),
                json!("The specified task status is not invalid.")
            ),
            "{status}"
        );
    }
    assert_eq!(
        cancel("t-absent".into()).await,
        (
            400,
            json!("InvalidTaskId.NotFound"),
            json!("The specified \"TaskId\" is not found.")
        )
    );
    // A task of another region is not found in this one.
    let elsewhere = emu
        .seed_task(json!({ "regionId": "cn-shanghai", "taskAction": "ImportImage" }))
        .await;
    assert_eq!(cancel(elsewhere).await.1, json!("InvalidTaskId.NotFound"));

    let (image, import) = emu.import(&[]).await;
    emu.faults(json!({ "cancelTaskFailed": true })).await;
    assert_eq!(
        cancel(import.clone()).await,
        (
            403,
            json!("CancelTaskFailed"),
            json!("The task is failed to cancel, Please contact the administrator.")
        )
    );
    assert_eq!(
        emu.task_attribute(&import).await["TaskStatus"],
        "Processing"
    );
    emu.faults(json!({ "cancelTaskFailed": false })).await;
    assert_eq!(cancel(import.clone()).await.0, 200);
    assert_eq!(emu.task_attribute(&import).await["TaskStatus"], "Deleted");
    assert!(
        emu.image("cn-hangzhou", &image).await.is_none(),
        "the half-imported image is removed"
    );

    // The admin listing shows every task as the API does.
    let (_, tasks) = emu.admin(reqwest::Method::GET, "tasks", None).await;
    let listed = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["taskId"] == redeploy.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        listed,
        json!({ "regionId": "cn-hangzhou", "taskId": redeploy, "taskAction": "RedeployInstance",
                "taskStatus": "Processing", "resourceId": "", "progress": "40%",
                "errorCode": null, "errorMsg": null })
    );
    for bad in [
        json!({ "regionId": "mars-1", "taskAction": "ImportImage" }),
        json!({ "regionId": "cn-hangzhou", "taskAction": "CopyImage" }),
        json!({ "regionId": "cn-hangzhou", "taskAction": "ImportImage", "taskStatus": "Paused" }),
        json!({ "regionId": "cn-hangzhou", "taskAction": "ImportImage", "progress": 101 }),
        json!({ "regionId": "cn-hangzhou", "taskAction": "ImportImage", "colour": "red" }),
    ] {
        let (status, body) = emu
            .admin(reqwest::Method::POST, "tasks", Some(bad.clone()))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string());
    }
}

#[tokio::test]
async fn an_image_is_exported_once_at_a_time_and_task_calls_are_logged() {
    let emu = start(config(30.0, 5)).await;
    let export = emu.export("m-demo0001").await;
    let (status, body) = emu
        .send(req(
            "ExportImage",
            &[
                ("RegionId", "cn-hangzhou"),
                ("ImageId", "m-demo0001"),
                ("OSSBucket", "other"),
            ],
        ))
        .await;
    assert_eq!(
        (status, body["Code"].as_str().unwrap()),
        (403, "ImageIsExporting")
    );
    // Once the export is cancelled the image can be exported again.
    emu.ok(
        "CancelTask",
        &[("RegionId", "cn-hangzhou"), ("TaskId", &export)],
    )
    .await;
    emu.export("m-demo0001").await;
    emu.import(&[("ClientToken", "uid-1")]).await;
    emu.task_ids(&[]).await;
    emu.task_attribute(&export).await;

    let (_, calls) = emu.admin(reqwest::Method::GET, "calls", None).await;
    assert_eq!(
        calls["counts"],
        json!({ "ExportImage": 3, "CancelTask": 1, "ImportImage": 1, "DescribeTasks": 1,
                "DescribeTaskAttribute": 1 })
    );
    let logged: Vec<(String, String, String)> = calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["action"].as_str().unwrap().to_string(),
                c["code"].as_str().unwrap().to_string(),
                c["clientToken"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        logged[1],
        (
            "ExportImage".into(),
            "ImageIsExporting".into(),
            String::new()
        )
    );
    assert_eq!(
        logged[4],
        ("ImportImage".into(), String::new(), "uid-1".into())
    );
}
