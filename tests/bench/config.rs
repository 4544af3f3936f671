//! The size and timing of a benchmark run, from `BENCH_*` environment variables (`make bench`
//! maps its `N=`, `R=`, … variables onto them).

use std::path::PathBuf;
use std::time::Duration;

use super::support::{OPERATOR_BIN, repo_root};

/// The region every copy starts from; the emulator seeds [`SOURCE_IMAGE`] there.
pub const SOURCE_REGION: &str = "cn-hangzhou";
pub const SOURCE_IMAGE: &str = "m-demo0001";
/// Destination regions, taken in this order; `BENCH_REGIONS` is at most their number.
pub const DESTINATIONS: [&str; 8] = [
    "cn-shanghai",
    "cn-beijing",
    "cn-shenzhen",
    "ap-southeast-1",
    "cn-qingdao",
    "cn-chengdu",
    "eu-central-1",
    "us-west-1",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}={value:?} is not {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("BENCH_REGIONS={0} is out of range: 1 to {max}", max = DESTINATIONS.len())]
    Regions(usize),
    #[error("BENCH_OBJECTS must be at least 1")]
    NoObjects,
    #[error("BENCH_REGION_QPS must be at least 1")]
    NoQps,
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// ImageCopy objects, spread round-robin over the destination regions.
    pub objects: usize,
    pub regions: usize,
    /// The emulator's `--copy-seconds`.
    pub copy_seconds: f64,
    /// The operator's `--poll-interval`, and the baseline poller's tick.
    pub poll_interval: Duration,
    /// The operator's `--resync-interval`: today the interval at which a finished copy is
    /// checked again, i.e. the drift-check interval.
    pub resync_interval: Duration,
    /// How long all objects are held Ready before they are deleted.
    pub at_rest: Duration,
    /// The operator's `--region-qps`, also the baseline's client-side limit.
    pub region_qps: u32,
    /// The operator's `--concurrency`.
    pub concurrency: u16,
    /// Creates and deletes sent to the apiserver at once.
    pub api_parallelism: usize,
    /// The `ecs-image-operator` binary run as emulator and operator (`make bench`: release).
    pub operator_bin: PathBuf,
    /// Where the JSON result goes.
    pub output: PathBuf,
    /// Longest wait for all Ready, and again for all gone.
    pub phase_timeout: Duration,
}

impl BenchConfig {
    /// `make bench` with nothing set: 200 objects in 4 regions, a few minutes on 2 cores.
    pub fn from_env() -> Result<BenchConfig, ConfigError> {
        let objects = number("BENCH_OBJECTS", 200)?;
        let regions = number("BENCH_REGIONS", 4)?;
        if objects == 0 {
            return Err(ConfigError::NoObjects);
        }
        if regions == 0 || regions > DESTINATIONS.len() {
            return Err(ConfigError::Regions(regions));
        }
        // Not a multiple of the 10 s tick: with one, every fixed-tick poll would land just as a
        // copy ends, flattering both sides' detection lag.
        let copy_seconds = number("BENCH_COPY_SECONDS", 25.0)?;
        let poll_interval = duration("BENCH_POLL_INTERVAL", "10s")?;
        let region_qps = number("BENCH_REGION_QPS", 10)?;
        if region_qps == 0 {
            return Err(ConfigError::NoQps);
        }
        Ok(BenchConfig {
            objects,
            regions,
            copy_seconds,
            poll_interval,
            resync_interval: duration("BENCH_RESYNC_INTERVAL", "60s")?,
            at_rest: duration("BENCH_AT_REST", "120s")?,
            region_qps,
            concurrency: number("BENCH_CONCURRENCY", 16)?,
            api_parallelism: number("BENCH_API_PARALLELISM", 32)?,
            operator_bin: std::env::var_os("BENCH_OPERATOR_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(OPERATOR_BIN)),
            output: std::env::var_os("BENCH_OUTPUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("target/bench/latest.json")),
            phase_timeout: default_phase_timeout(objects, region_qps, copy_seconds, poll_interval),
        })
    }

    /// The destination region of the `index`-th object (and of the baseline's `index`-th copy).
    pub fn destination(&self, index: usize) -> &'static str {
        DESTINATIONS[index % self.regions]
    }

    /// `release` or `debug`, read from the binary's path, for the report.
    pub fn build(&self) -> &'static str {
        if self
            .operator_bin
            .components()
            .any(|c| c.as_os_str() == "release")
        {
            "release"
        } else {
            "debug"
        }
    }
}

/// Generous: every CopyImage through one source region at the QPS limit, twice over, plus the
/// copy and a few ticks, plus ten minutes for a slow machine.
fn default_phase_timeout(
    objects: usize,
    region_qps: u32,
    copy_seconds: f64,
    poll_interval: Duration,
) -> Duration {
    let issue = 2.0 * objects as f64 / f64::from(region_qps);
    Duration::from_secs_f64(issue + copy_seconds + 5.0 * poll_interval.as_secs_f64() + 600.0)
}

fn number<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value.trim().parse().map_err(|_| ConfigError::Invalid {
            name,
            value,
            expected: "a number",
        }),
        _ => Ok(default),
    }
}

fn duration(name: &'static str, default: &str) -> Result<Duration, ConfigError> {
    let value = std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string());
    humantime::parse_duration(value.trim()).map_err(|_| ConfigError::Invalid {
        name,
        value,
        expected: "a duration such as 10s or 5m",
    })
}
