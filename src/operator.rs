//! `ecs-image-operator run`: the controller process — Kubernetes client, ECS client, one
//! controller per kind under one shutdown and one leader lease, and the `/metrics`,
//! `/healthz`, `/readyz` endpoints.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::StreamExt;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{WatchStreamExt, reflector};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{error, info, warn};

use crate::api::{ImageCopy, ImageExport, ImageImport, ImageReplication, REPLICATION_UID_LABEL};
use crate::controller::image_replication::{self, Replications};
use crate::controller::metrics::Metrics;
use crate::controller::needs_work::NeedsWork;
use crate::controller::task::{self, CloudTask};
use crate::controller::{Context, Timing, events::Recorder};
use crate::ecs::{CallObserver, CredentialsProvider, EcsClient, EcsClientConfig, Fence};
use crate::leader::{ElectionTiming, LeaderElector, LeaseConfig};

/// How long in-flight reconciliations may take to finish after a stop (SIGTERM or lost lease),
/// within Kubernetes' default 30s termination grace period.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Send every region's ECS calls to this endpoint (emulator, proxy); `http://` only here.
    /// Default: `https://ecs.<region>.aliyuncs.com`.
    #[arg(long, env = "ECS_ENDPOINT")]
    pub ecs_endpoint: Option<url::Url>,
    /// PEM file of CA certificates to trust besides the public roots, for a private endpoint
    /// or a TLS-inspecting proxy (ECS and STS); verification is never turned off.
    #[arg(long, env = "ECS_CA_FILE")]
    pub ecs_ca_file: Option<std::path::PathBuf>,
    /// Use the VPC endpoints `https://ecs-vpc.<region>.aliyuncs.com`.
    #[arg(long, env = "ECS_VPC_ENDPOINTS")]
    pub vpc_endpoints: bool,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    #[arg(long, value_enum, default_value = "text", env = "LOG_FORMAT")]
    pub log_format: LogFormat,
    /// How often progress shows while work is in flight: a region's copies are listed at least
    /// this far apart and, for copies far from their end, up to six times as far; a copy's end is
    /// looked for when its progress says it is due.
    #[arg(long, default_value = "10s", value_parser = interval)]
    pub poll_interval: Duration,
    /// Status writes that only show new progress, per second over all objects in flight: with
    /// many copies running, each shows its progress less often than every poll interval, and
    /// starts and finished copies do not wait behind a burst of progress writes. Starts, ends
    /// and failures are written at once, whatever this says.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub progress_writes_per_second: u32,
    /// The drift-check interval: finished copies and imports are checked (for example for
    /// out-of-band deletion) against one listing per region per interval.
    #[arg(long, default_value = "5m", value_parser = interval)]
    pub resync_interval: Duration,
    /// Wait after a terminal error (Stalled) before trying again.
    #[arg(long, default_value = "5m", value_parser = interval)]
    pub stalled_retry: Duration,
    /// Client-side limit of ECS calls per second per region.
    #[arg(long, default_value_t = 10)]
    pub region_qps: u32,
    /// Objects of each kind reconciled at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// Reconcile only while holding a Lease, so several replicas can run safely. On by default;
    /// `--leader-elect=false` for a single development process.
    #[arg(
        long,
        env = "LEADER_ELECT",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease. Default: `$POD_NAMESPACE`, else the namespace of
    /// the in-cluster service account, else `default`.
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "ecs-image-operator")]
    pub leader_election_id: String,
    /// How long a Lease must stay unrenewed before another replica takes it over.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_election_lease_duration: Duration,
    /// How long the leader goes on acting without a successful renewal; less than the lease
    /// duration.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub leader_election_renew_deadline: Duration,
    /// How often the leader renews and a standby looks at the Lease; less than the renew
    /// deadline. Also the time limit of one Lease API call.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub leader_election_retry_period: Duration,
}

/// Shortest accepted interval: anything less polls ECS in a hot loop.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// A duration flag such as `10s` or `5m`, at least [`MIN_INTERVAL`].
fn interval(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration < MIN_INTERVAL {
        return Err(format!(
            "{text} is too short: at least {} (a shorter interval polls ECS in a hot loop)",
            humantime::format_duration(MIN_INTERVAL)
        ));
    }
    Ok(duration)
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    Json,
    Text,
}

pub async fn run(args: RunArgs) -> ExitCode {
    init_logging(args.log_format);
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            eprintln!("ecs-image-operator run: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(args: RunArgs) -> Result<(), String> {
    let leader_timing = ElectionTiming::new(
        args.leader_election_lease_duration,
        args.leader_election_renew_deadline,
        args.leader_election_retry_period,
    )
    .map_err(|e| e.to_string())?;
    // One listener for the whole life of the process: a signal that arrives between two phases
    // (say, just after the lease was won) is still seen.
    let (signalled, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = signalled.send(true);
    });
    let shutdown_requested = move || {
        let mut shutdown = shutdown.clone();
        async move {
            let _ = shutdown.wait_for(|requested| *requested).await;
        }
    };
    tokio::spawn(crate::allocator::return_free_pages(
        crate::allocator::RETURN_FREE_PAGES_EVERY,
    ));
    let metrics = Arc::new(Metrics::default());

    let extra_roots = match &args.ecs_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| format!("cannot read --ecs-ca-file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let default_credentials = match CredentialsProvider::from_env_trusting(extra_roots.as_deref()) {
        Ok(provider) => Some(provider),
        Err(e) => {
            warn!(
                "no operator-wide ECS credentials ({e}); only objects with spec.credentialsSecretRef can work"
            );
            None
        }
    };
    let ecs_config = EcsClientConfig {
        endpoint: args.ecs_endpoint.clone(),
        vpc: args.vpc_endpoints,
        region_qps: args.region_qps,
        extra_root_certificates_pem: extra_roots,
        ..Default::default()
    };
    // Objects always call through `with_credentials`; this provider only seeds the shared client.
    let seed = default_credentials
        .clone()
        .unwrap_or_else(|| CredentialsProvider::fixed(crate::ecs::Credentials::new("", "")));
    // With leader election, nothing changes in ECS until the lease is ours, and nothing once
    // this replica is no longer sure it is.
    let fence = if args.leader_elect {
        Fence::closed()
    } else {
        Fence::open()
    };
    let ecs = EcsClient::new(ecs_config, seed)
        .map_err(|e| format!("invalid ECS configuration: {e}"))?
        .with_observer(metrics.clone() as Arc<dyn CallObserver>)
        .with_fence(fence.clone());
    // After the ECS set-up, so that a bad --ecs-ca-file or endpoint is reported first.
    let client = Client::try_default()
        .await
        .map_err(|e| format!("cannot reach Kubernetes: {e}"))?;

    let reporter = Reporter {
        controller: "ecs-image-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let timing = Timing {
        poll_interval: args.poll_interval,
        resync_interval: args.resync_interval,
        stalled_retry: args.stalled_retry,
        progress_writes_per_second: args.progress_writes_per_second,
        ..Default::default()
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        ecs,
        default_credentials,
        recorder,
        metrics.clone(),
        timing,
    ));

    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.metrics_addr))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz_handler))
        .with_state(HttpState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        });
    // Scripts and tests read the bound address from this line.
    println!("metrics on http://{local}");
    // The HTTP server stops after the controller, so probes and metrics stay answerable
    // while the controller drains.
    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let stop = async move {
            let _ = server_stopped.await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            error!("metrics server: {e}");
        }
    });
    let stop_server = move || async move {
        let _ = server_stop.send(());
        let _ = server.await;
    };

    // Every kind's CRD must be installed; fail clearly rather than watch a missing resource.
    probe::<ImageCopy>(&client, args.namespace.as_deref()).await?;
    probe::<ImageImport>(&client, args.namespace.as_deref()).await?;
    probe::<ImageExport>(&client, args.namespace.as_deref()).await?;
    probe::<ImageReplication>(&client, args.namespace.as_deref()).await?;
    ready.store(true, Ordering::SeqCst);

    let elector = args.leader_elect.then(|| {
        let config = LeaseConfig {
            namespace: lease_namespace(args.leader_election_namespace.clone()),
            name: args.leader_election_id.clone(),
            identity: identity(),
            timing: leader_timing,
        };
        info!(namespace = %config.namespace, lease = %config.name, identity = %config.identity, "leader election");
        Arc::new(LeaderElector::new(client.clone(), config, fence))
    });
    let acquired = match &elector {
        Some(elector) => tokio::select! {
            acquired = elector.acquire() => Some(acquired),
            _ = shutdown_requested() => {
                stop_server().await;
                return Ok(());
            }
        },
        None => None,
    };
    info!(
        namespace = args.namespace.as_deref().unwrap_or("*"),
        "controller started"
    );

    // The controller stops on a signal or when the lease is lost. The trigger it takes must be
    // `Sync`, which the Kubernetes calls inside `keep_leading` are not, so a task watches them.
    let lost_lease = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let elector = elector.clone();
        let lost_lease = lost_lease.clone();
        tokio::spawn(async move {
            match elector.zip(acquired) {
                Some((elector, acquired)) => tokio::select! {
                    _ = elector.keep_leading(acquired) => lost_lease.store(true, Ordering::SeqCst),
                    _ = shutdown_requested() => {}
                },
                None => shutdown_requested().await,
            }
            let _ = stop_tx.send(true);
        });
    }
    let stop_requested = {
        let stop_rx = stop_rx.clone();
        move || {
            let mut stop_rx = stop_rx.clone();
            async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            }
        }
    };
    let namespace = args.namespace.as_deref();
    let controller = futures::future::join4(
        run_kind::<ImageCopy>(
            &client,
            namespace,
            ctx.clone(),
            args.concurrency,
            stop_rx.clone(),
        ),
        run_kind::<ImageImport>(
            &client,
            namespace,
            ctx.clone(),
            args.concurrency,
            stop_rx.clone(),
        ),
        run_kind::<ImageExport>(
            &client,
            namespace,
            ctx.clone(),
            args.concurrency,
            stop_rx.clone(),
        ),
        run_replications(
            &client,
            namespace,
            ctx.clone(),
            args.concurrency,
            stop_rx.clone(),
        ),
    );
    tokio::select! {
        _ = controller => {}
        _ = async {
            stop_requested().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => warn!("reconciliations still running {DRAIN_TIMEOUT:?} after the stop; exiting anyway"),
    }
    info!("controller stopped");
    ready.store(false, Ordering::SeqCst);
    if lost_lease.load(Ordering::SeqCst) {
        return Err(
            "lost the leader-election lease; exiting so that a fresh process competes again".into(),
        );
    }
    if let Some(elector) = &elector {
        elector.release().await;
    }
    stop_server().await;
    Ok(())
}

fn api<K: Watched>(client: &Client, namespace: Option<&str>) -> Api<K> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn probe<K: Watched>(client: &Client, namespace: Option<&str>) -> Result<(), String> {
    api::<K>(client, namespace)
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map(drop)
        .map_err(|e| {
            format!(
                "cannot list {} objects (are the CRDs installed? `ecs-image-operator crd | kubectl apply -f -`): {e}",
                K::kind(&())
            )
        })
}

/// One kind's controller until `stop` turns true and its reconciliations drain.
async fn run_kind<K: CloudTask>(
    client: &Client,
    namespace: Option<&str>,
    ctx: Arc<Context>,
    concurrency: u16,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let (reader, changes) = changes_needing_work::<K>(client, namespace);
    let graceful = stop_once_cached(reader.clone(), stop);
    // Objects whose image in flight changed, as the region pollers find them; finished objects
    // whose image drifted, as the drift check finds them; objects whose turn to start came.
    let woken = futures::stream::select(ctx.in_flight.wakes(K::KIND), ctx.wakes.receiver(K::KIND))
        .map(|object| ObjectRef::new(&object.name).within(object.namespace.as_str()));
    Controller::for_stream(changes, reader)
        .reconcile_on(woken)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(graceful)
        .run(task::reconcile::<K>, task::error_policy::<K>, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The `ImageReplication` controller until `stop` turns true and its reconciliations drain. It
/// watches the replications and, to follow their progress, the `ImageCopy` objects they made
/// (and only those: the label selector keeps other copies out of its cache).
async fn run_replications(
    client: &Client,
    namespace: Option<&str>,
    ctx: Arc<Context>,
    concurrency: u16,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let (reader, changes) = changes_needing_work::<ImageReplication>(client, namespace);
    let (children, children_writer) = reflector::store();
    // Every change of a child counts, its status above all: that is the replication's progress.
    let child_changes = watcher(
        api::<ImageCopy>(client, namespace),
        watcher::Config::default()
            .labels(REPLICATION_UID_LABEL)
            .any_semantic(),
    )
    .default_backoff()
    .modify(strip_for_cache)
    .reflect(children_writer)
    .touched_objects();
    let graceful = stop_once_cached(reader.clone(), stop);
    let replications = Arc::new(Replications {
        shared: ctx,
        children,
    });
    Controller::for_stream(changes, reader)
        .owns_stream(child_changes)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(graceful)
        .run(
            image_replication::reconcile,
            image_replication::error_policy,
            replications,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The cache of kind `K` and the stream of its changes that need work (`NeedsWork`): a status
/// write, ours, wakes no reconcile.
fn changes_needing_work<K: Watched>(
    client: &Client,
    namespace: Option<&str>,
) -> (
    reflector::Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
) {
    let (reader, writer) = reflector::store();
    let changes = watcher(
        api::<K>(client, namespace),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .modify(strip_for_cache)
    .reflect(writer)
    .filter_map({
        let mut needs_work = NeedsWork::default();
        move |event| {
            futures::future::ready(match event {
                Ok(event) => needs_work.filter(event).map(Ok),
                Err(error) => Some(Err(error)),
            })
        }
    });
    (reader, changes)
}

/// Resolves when `stop` turns true, but not before `cache` has its first listing: the
/// controller holds its workers until then, and a graceful stop before it would wait forever.
async fn stop_once_cached<K: Watched>(
    cache: reflector::Store<K>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = cache.wait_until_ready().await;
    let _ = stop.wait_for(|stop| *stop).await;
}

/// What the operator watches: a namespaced kind of ours.
trait Watched:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Drops what no reconciliation reads before an object reaches the cache: `managedFields` and
/// kubectl's last-applied copy of the object are often larger than the rest of it, and the
/// cache holds every object for the life of the process.
fn strip_for_cache<K: Resource>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    if let Some(annotations) = &mut obj.meta_mut().annotations {
        annotations.remove(LAST_APPLIED);
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Where a pod finds the namespace of its service account.
const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The Lease's namespace: the flag (or `$POD_NAMESPACE`), else the pod's own namespace, else
/// `default`.
fn lease_namespace(flag: Option<String>) -> String {
    flag.filter(|ns| !ns.is_empty())
        .or_else(|| {
            std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE_FILE)
                .ok()
                .map(|ns| ns.trim().to_string())
                .filter(|ns| !ns.is_empty())
        })
        .unwrap_or_else(|| "default".into())
}

/// The leader-election identity. `$POD_NAME` is unique per pod and stays the same when a
/// container restarts, so a restarted leader takes its own lease back at once; without it,
/// the host name plus a random suffix, unique per process.
fn identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ecs-image-operator".into());
    format!("{host}-{}", uuid::Uuid::new_v4().simple())
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

async fn metrics_handler(State(state): State<HttpState>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz_handler(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_no_managed_fields_or_last_applied_copy() {
        let mut copy: ImageCopy = serde_json::from_value(serde_json::json!({
            "apiVersion": "imageops.dev/v1alpha1",
            "kind": "ImageCopy",
            "metadata": {
                "name": "c",
                "annotations": {LAST_APPLIED: "{...}", "team": "platform"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                "finalizers": ["imageops.dev/cleanup"],
            },
            "spec": {"sourceRegionId": "cn-hangzhou", "sourceImageId": "m-1", "destinationRegionId": "cn-shanghai"},
        }))
        .unwrap();
        strip_for_cache(&mut copy);
        assert!(copy.metadata.managed_fields.unwrap_or_default().is_empty());
        let annotations = copy.metadata.annotations.unwrap_or_default();
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert_eq!(
            annotations.get("team").map(String::as_str),
            Some("platform")
        );
        assert_eq!(
            copy.metadata.finalizers.unwrap_or_default().len(),
            1,
            "what reconciles read stays"
        );
    }

    #[test]
    fn intervals_that_would_hot_loop_are_refused() {
        assert!(interval("0s").is_err());
        assert!(interval("10ms").is_err());
        assert!(interval("nonsense").is_err());
        assert_eq!(interval("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(interval("500ms"), Ok(Duration::from_millis(500)));
    }
}
