//! The HTTP surface: RPC requests on `/` (GET or POST, parameters in the query and/or a form
//! body, exactly as official SDKs send them) and the admin API under `/_emulator/`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use serde::Serialize;
use serde_json::Value;

use super::actions::{self, Ctx, ECS_VERSION, Reply};
use super::admin;
use super::auth::{self, Incoming, KeyStore, NonceCache};
use super::errors::ApiError;
use super::faults::Faults;
use super::params::Params;
use super::regions;
use super::state::{Time, World};
use super::sts;

/// Most recent calls kept for `GET /_emulator/calls`; counts stay exact beyond it, so a long
/// benchmark cannot grow memory without bound.
const CALL_HISTORY: usize = 100_000;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    pub action: String,
    pub region_id: String,
    /// Empty on success.
    pub code: String,
    pub at: String,
    /// The AccessKeyId the request claims (V3 `Authorization` credential, V1 `AccessKeyId`),
    /// so tests can tell apart callers that use different keys; empty when there is none.
    pub access_key_id: String,
    /// The `ClientToken` the call carried (CopyImage, ImportImage), so tests can tell which
    /// object a call was made for; empty when there is none.
    pub client_token: String,
}

impl Call {
    fn new(action: &str, params: &Params, incoming: &Incoming<'_>) -> Call {
        Call {
            action: action.to_string(),
            region_id: params.get("RegionId").unwrap_or_default().to_string(),
            code: String::new(),
            at: String::new(),
            access_key_id: claimed_access_key_id(incoming, params),
            client_token: params.get("ClientToken").unwrap_or_default().to_string(),
        }
    }
}

#[derive(Debug, Default)]
pub struct CallLog {
    pub counts: BTreeMap<String, u64>,
    pub calls: std::collections::VecDeque<Call>,
}

impl CallLog {
    /// Logs `call` as answered at `at` with `code` (empty on success).
    fn record(&mut self, mut call: Call, code: &str, at: Time) {
        *self.counts.entry(call.action.clone()).or_default() += 1;
        if self.calls.len() == CALL_HISTORY {
            self.calls.pop_front();
        }
        call.code = code.to_string();
        call.at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.calls.push_back(call);
    }
}

/// Everything one emulator instance knows, behind one lock: requests are short and never wait
/// while holding it (emulated time is computed, not slept).
#[derive(Debug)]
pub struct Shared {
    pub world: World,
    pub keys: KeyStore,
    pub nonces: NonceCache,
    pub faults: Faults,
    pub calls: CallLog,
}

#[derive(Clone)]
pub struct App(Arc<Mutex<Shared>>);

impl App {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(Mutex::new(shared)))
    }

    /// A panic elsewhere must not wedge the emulator, so a poisoned lock is still used.
    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(rpc).post(rpc))
        .nest("/_emulator", admin::router())
        .fallback(not_found)
        .with_state(app)
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string().to_ascii_uppercase()
}

async fn not_found() -> Response {
    error_response(
        &ApiError::invalid_action(),
        &new_request_id(),
        "ecs.aliyuncs.com",
    )
}

fn json_response(status: StatusCode, body: &Value, request_id: &str) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-acs-request-id", id);
    }
    response
}

fn error_response(error: &ApiError, request_id: &str, host_id: &str) -> Response {
    json_response(error.status, &error.body(request_id, host_id), request_id)
}

fn respond(result: Result<Reply, ApiError>, request_id: &str, host_id: &str) -> Response {
    match result {
        Ok(mut reply) => {
            reply.insert("RequestId".into(), Value::String(request_id.to_string()));
            json_response(StatusCode::OK, &Value::Object(reply), request_id)
        }
        Err(error) => error_response(&error, request_id, host_id),
    }
}

/// One RPC request, ECS or STS.
async fn rpc(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = new_request_id();
    let now = Utc::now();
    let query = Params::decode(uri.query().unwrap_or_default().as_bytes());
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let form = if is_form {
        Params::decode(&body)
    } else {
        Vec::new()
    };
    // Names from the http crate are already lowercase, as canonical headers need them.
    let header_pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let params = Params(query.iter().chain(form.iter()).cloned().collect());
    let incoming = Incoming {
        method: method.as_str(),
        query: &query,
        form: &form,
        headers: &header_pairs,
        body: &body,
    };
    // V3 names the operation in headers, V1 in parameters.
    let action = incoming
        .header("x-acs-action")
        .or_else(|| params.non_empty("Action"))
        .unwrap_or_default()
        .to_string();
    let version = incoming
        .header("x-acs-version")
        .or_else(|| params.non_empty("Version"))
        .unwrap_or_default()
        .to_string();
    let region_id = params.get("RegionId").unwrap_or_default().to_string();
    let call = Call::new(&action, &params, &incoming);

    if action == sts::ACTION {
        let mut shared = app.lock();
        let result = sts::assume_role_with_oidc(&params, &mut shared.keys, now);
        let code = result.as_ref().err().map(|e| e.code.as_str()).unwrap_or("");
        shared.calls.record(call, code, now);
        return respond(result, &request_id, "sts.aliyuncs.com");
    }

    let (latency, hang) = {
        let shared = app.lock();
        (
            Duration::from_millis(shared.faults.latency_ms),
            shared.faults.hang(),
        )
    };
    // A hung call waits before anything is checked, like a request stuck in front of the
    // service; a client that gives up meanwhile cannot know whether it would have been handled.
    let delay = latency + hang.unwrap_or_default();
    let now = if delay.is_zero() {
        now
    } else {
        tokio::time::sleep(delay).await;
        // Handled now, not when it arrived: the world must never be asked to act in the past.
        Utc::now()
    };
    let host_id = if regions::is_known(&region_id) {
        regions::endpoint(&region_id)
    } else {
        "ecs.aliyuncs.com".to_string()
    };
    let mut guard = app.lock();
    let shared = &mut *guard;
    let result = handle_ecs(&action, &version, &params, &incoming, shared, now);
    // A request that names no action is not an ECS call and is not counted.
    if !action.is_empty() {
        let code = result.as_ref().err().map(|e| e.code.as_str()).unwrap_or("");
        shared.calls.record(call, code, now);
    }
    drop(guard);
    if let Err(error) = &result {
        tracing::debug!(%action, %region_id, code = %error.code, message = %error.message, "rejected");
    }
    respond(result, &request_id, &host_id)
}

/// The key a request says it is signed with, whether or not the signature holds.
fn claimed_access_key_id(incoming: &Incoming<'_>, params: &Params) -> String {
    if let Some(id) = params.non_empty("AccessKeyId") {
        return id.to_string();
    }
    incoming
        .header("authorization")
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|rest| rest.split([',', ' ']).next())
        .unwrap_or_default()
        .to_string()
}

fn handle_ecs(
    action: &str,
    version: &str,
    params: &Params,
    incoming: &Incoming<'_>,
    shared: &mut Shared,
    now: Time,
) -> Result<Reply, ApiError> {
    if action.is_empty() {
        return Err(ApiError::missing_parameter("Action"));
    }
    if !actions::is_ecs_action(action) {
        return Err(ApiError::invalid_action());
    }
    if version != ECS_VERSION {
        return Err(ApiError::invalid_version());
    }
    auth::verify(incoming, &shared.keys, &mut shared.nonces, now)?;
    if let Some(error) = shared.faults.roll() {
        return Err(error);
    }
    let region_id = params.get("RegionId").unwrap_or_default();
    if let Some(error) = shared.faults.injected(action, region_id) {
        return Err(error);
    }
    actions::dispatch(
        action,
        params,
        &mut Ctx {
            world: &mut shared.world,
            faults: &mut shared.faults,
            now,
        },
    )
}
