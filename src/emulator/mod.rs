//! An offline emulator of the Alibaba Cloud ECS OpenAPI (2014-05-26) subset the operator uses,
//! plus STS `AssumeRoleWithOIDC`, faithful enough that the official SDKs run against it
//! (`docs/emulator.md`). It verifies real signatures, answers with the real JSON shapes and error codes,
//! and simulates per-region copy queues and import/export tasks in computed (not slept) time.
//!
//! This module must not depend on controller code; it shares only the signature primitives in
//! [`crate::ecs::sign`] with the client.

mod actions;
mod admin;
mod auth;
pub mod errors;
mod faults;
mod http;
mod images;
mod params;
mod regions;
mod state;
mod sts;
mod tags;
mod tasks;

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use tokio::net::TcpListener;

use self::auth::{KeyStore, NonceCache};
use self::http::{App, Shared};
use self::state::{ImageStatus, SeedImage, Timing, World};

/// Flags of `ecs-image-operator emulator` (README, "The binary").
#[derive(Debug, Clone, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on; port 0 picks a free port (the chosen one is printed).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,
    /// An accepted long-term access key (repeatable).
    #[arg(
        long = "access-key",
        value_name = "ID:SECRET",
        default_value = "testid:testsecret",
        value_parser = parse_access_key
    )]
    pub access_keys: Vec<AccessKey>,
    /// Seconds a copy takes from starting to run until `Available` (fractions allowed).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = parse_seconds)]
    pub copy_seconds: f64,
    /// Seconds an ImportImage/ExportImage task runs; defaults to --copy-seconds.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub task_seconds: Option<f64>,
    /// Copies (and, separately, tasks) running at once per region; the rest wait as `Waiting`.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub region_concurrency: u32,
    /// Seeds an `Available` custom image owned by the account (repeatable).
    #[arg(
        long = "image",
        value_name = "REGION:IMAGE_ID[:NAME]",
        default_value = "cn-hangzhou:m-demo0001",
        value_parser = parse_image
    )]
    pub images: Vec<SeededImage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededImage {
    pub region_id: String,
    pub image_id: String,
    pub name: String,
}

fn parse_access_key(value: &str) -> Result<AccessKey, String> {
    match value.split_once(':') {
        Some((id, secret)) if !id.is_empty() && !secret.is_empty() => Ok(AccessKey {
            id: id.to_string(),
            secret: secret.to_string(),
        }),
        _ => Err("expected ID:SECRET".to_string()),
    }
}

fn parse_seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=1e7).contains(&s) => Ok(s),
        _ => Err("expected a number of seconds between 0 and 10000000".to_string()),
    }
}

fn parse_image(value: &str) -> Result<SeededImage, String> {
    let mut parts = value.splitn(3, ':');
    let region_id = parts.next().unwrap_or_default();
    let image_id = parts.next().unwrap_or_default();
    if !regions::is_known(region_id) {
        return Err(format!("unknown region {region_id:?}"));
    }
    if image_id.is_empty() {
        return Err("expected REGION:IMAGE_ID[:NAME]".to_string());
    }
    Ok(SeededImage {
        region_id: region_id.to_string(),
        image_id: image_id.to_string(),
        name: parts
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or(image_id)
            .to_string(),
    })
}

/// What an emulator instance starts with.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub access_keys: Vec<AccessKey>,
    pub copy_duration: Duration,
    pub task_duration: Duration,
    pub region_concurrency: usize,
    pub images: Vec<SeededImage>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            access_keys: vec![AccessKey {
                id: "testid".into(),
                secret: "testsecret".into(),
            }],
            copy_duration: Duration::from_secs(30),
            task_duration: Duration::from_secs(30),
            region_concurrency: 5,
            images: vec![SeededImage {
                region_id: "cn-hangzhou".into(),
                image_id: "m-demo0001".into(),
                name: "m-demo0001".into(),
            }],
        }
    }
}

impl From<&EmulatorArgs> for EmulatorConfig {
    fn from(args: &EmulatorArgs) -> Self {
        let copy_duration = Duration::from_secs_f64(args.copy_seconds);
        Self {
            access_keys: args.access_keys.clone(),
            copy_duration,
            task_duration: args
                .task_seconds
                .map_or(copy_duration, Duration::from_secs_f64),
            region_concurrency: usize::try_from(args.region_concurrency).unwrap_or(usize::MAX),
            images: args.images.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("--image {0}: unknown region")]
    UnknownRegion(String),
    #[error("--image: {0}")]
    DuplicateImage(#[from] state::SeedError),
    #[error("--region-concurrency must be at least 1")]
    NoConcurrency,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

fn build(config: &EmulatorConfig) -> Result<App, EmulatorError> {
    if config.region_concurrency == 0 {
        return Err(EmulatorError::NoConcurrency);
    }
    let now = Utc::now();
    let mut world = World::new(Timing {
        copy: delta(config.copy_duration),
        task: delta(config.task_duration),
        concurrency: config.region_concurrency,
    });
    for image in &config.images {
        if !regions::is_known(&image.region_id) {
            return Err(EmulatorError::UnknownRegion(image.region_id.clone()));
        }
        world.seed_image(
            SeedImage {
                region: image.region_id.clone(),
                id: image.image_id.clone(),
                name: image.name.clone(),
                status: ImageStatus::Available,
                tags: Vec::new(),
            },
            now,
        )?;
    }
    let keys: Vec<(String, String)> = config
        .access_keys
        .iter()
        .map(|k| (k.id.clone(), k.secret.clone()))
        .collect();
    Ok(App::new(Shared {
        world,
        keys: KeyStore::new(&keys),
        nonces: NonceCache::default(),
        faults: faults::Faults::default(),
        calls: http::CallLog::default(),
    }))
}

/// Serves the emulator on `listener` until `shutdown` completes, then drains connections.
pub async fn serve(
    config: EmulatorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EmulatorError> {
    let app = build(&config)?;
    axum::serve(listener, http::router(app))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// The `emulator` subcommand: binds, prints `ecs-emulator listening on http://ADDR` (scripts
/// read the port from it), and serves until SIGTERM or SIGINT.
pub async fn run(args: EmulatorArgs) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let config = EmulatorConfig::from(&args);
    // Validate before binding so a bad flag never leaves a half-started emulator.
    if let Err(error) = build(&config) {
        eprintln!("ecs-emulator: {error}");
        return ExitCode::from(2);
    }
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("ecs-emulator: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let address = match listener.local_addr() {
        Ok(address) => address,
        Err(error) => {
            eprintln!("ecs-emulator: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "ecs-emulator listening on http://{address}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    tracing::info!(%address, copy_seconds = args.copy_seconds, region_concurrency = args.region_concurrency, "ECS emulator ready");
    match serve(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ecs-emulator: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM. A signal that cannot be watched never fires rather than
/// shutting the emulator down at once.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: EmulatorArgs,
    }

    #[test]
    fn defaults_follow_the_spec() {
        let args = Cli::parse_from(["emulator"]).args;
        assert_eq!(args.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(
            args.access_keys,
            vec![AccessKey {
                id: "testid".into(),
                secret: "testsecret".into()
            }]
        );
        assert_eq!(args.copy_seconds, 30.0);
        assert_eq!(args.region_concurrency, 5);
        let config = EmulatorConfig::from(&args);
        assert_eq!(config.task_duration, Duration::from_secs(30));
        assert_eq!(config.images, EmulatorConfig::default().images);
    }

    #[test]
    fn flags_parse_and_validate() {
        let args = Cli::parse_from([
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--access-key",
            "a:b:c",
            "--access-key",
            "x:y",
            "--copy-seconds",
            "0.5",
            "--region-concurrency",
            "1",
            "--image",
            "cn-shanghai:m-1:my-name",
            "--image",
            "cn-beijing:m-2",
        ])
        .args;
        assert_eq!(args.access_keys[0].secret, "b:c");
        assert_eq!(args.images[0].name, "my-name");
        assert_eq!(args.images[1].name, "m-2");
        let config = EmulatorConfig::from(&args);
        assert_eq!(config.copy_duration, Duration::from_millis(500));
        assert_eq!(config.task_duration, Duration::from_millis(500));
        for bad in [
            vec!["emulator", "--image", "mars-1:m-1"],
            vec!["emulator", "--access-key", "nosecret"],
            vec!["emulator", "--copy-seconds", "-1"],
            vec!["emulator", "--region-concurrency", "0"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err());
        }
    }

    #[test]
    fn duplicate_seeds_are_rejected() {
        let image = SeededImage {
            region_id: "cn-hangzhou".into(),
            image_id: "m-1".into(),
            name: "one".into(),
        };
        let config = EmulatorConfig {
            images: vec![image.clone(), image],
            ..EmulatorConfig::default()
        };
        assert!(matches!(
            build(&config),
            Err(EmulatorError::DuplicateImage(_))
        ));
    }
}
