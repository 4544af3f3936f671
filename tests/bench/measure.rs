//! What the benchmark reads from the operator process and its `/metrics`, and the statistics
//! it reports.

use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} has no readable {field}")]
    Field { path: String, field: &'static str },
    #[error("cannot learn the clock tick (getconf CLK_TCK): {0}")]
    ClockTick(String),
}

/// Memory and CPU of one process, from `/proc/<pid>/status` and `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessSample {
    /// `VmRSS`: resident now.
    pub rss_mib: f64,
    /// `VmHWM`: the highest resident size so far.
    pub rss_peak_mib: f64,
    /// `utime + stime`.
    pub cpu_seconds: f64,
}

impl ProcessSample {
    pub fn read(pid: u32) -> Result<ProcessSample, MeasureError> {
        let status_path = format!("/proc/{pid}/status");
        let status =
            std::fs::read_to_string(&status_path).map_err(|source| MeasureError::Read {
                path: status_path.clone(),
                source,
            })?;
        let stat_path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&stat_path).map_err(|source| MeasureError::Read {
            path: stat_path.clone(),
            source,
        })?;
        Ok(ProcessSample {
            rss_mib: kib_field(&status, "VmRSS:", &status_path)? / 1024.0,
            rss_peak_mib: kib_field(&status, "VmHWM:", &status_path)? / 1024.0,
            cpu_seconds: cpu_ticks(&stat, &stat_path)? as f64 / clock_ticks_per_second()? as f64,
        })
    }
}

/// `VmRSS:   12345 kB` → 12345.
fn kib_field(status: &str, field: &'static str, path: &str) -> Result<f64, MeasureError> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| MeasureError::Field {
            path: path.into(),
            field,
        })
}

/// `utime + stime` of `/proc/<pid>/stat`: fields 14 and 15, counted after the command name in
/// parentheses (which may itself hold spaces).
fn cpu_ticks(stat: &str, path: &str) -> Result<u64, MeasureError> {
    let missing = || MeasureError::Field {
        path: path.into(),
        field: "utime/stime",
    };
    let after_name = &stat[stat.rfind(')').ok_or_else(missing)? + 1..];
    // After the name come field 3 (state) onwards, so utime (14) is the 12th.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields
        .get(11)
        .and_then(|f| f.parse().ok())
        .ok_or_else(missing)?;
    let stime: u64 = fields
        .get(12)
        .and_then(|f| f.parse().ok())
        .ok_or_else(missing)?;
    Ok(utime + stime)
}

fn clock_ticks_per_second() -> Result<u64, MeasureError> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .map_err(|e| MeasureError::ClockTick(e.to_string()))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| MeasureError::ClockTick(String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The sum of a counter (e.g. `ecs_image_operator_reconciles_total`) over every label set, from
/// `/metrics` text.
pub fn counter_total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The nearest-rank percentile `p` (0 < p ≤ 1) of `values`; `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn max(values: &[f64]) -> Option<f64> {
    values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .reduce(f64::max)
}

/// The earliest moment each copy's CopyImage call could go out when all of them share one
/// budget of `qps` calls a second that starts full (`qps` deep, as the operator's and the
/// baseline's rate limiter do): the `k`-th copy to start (from 0, in the order of `started`) no
/// earlier than the first application plus (k + 1 − qps) ÷ qps seconds, nor before its own
/// application. Copies are given the budget's moments in the order they started, not in the
/// order they were applied: objects applied together start in no particular order, and which
/// of them waits longest is not the client's doing; how much later than the budget allowed
/// each started still counts. `applied[i]` and `started[i]` are the same copy's; the result is
/// in that order too.
pub fn budget_starts(
    applied: &[chrono::DateTime<chrono::Utc>],
    started: &[chrono::DateTime<chrono::Utc>],
    qps: f64,
) -> Vec<chrono::DateTime<chrono::Utc>> {
    let Some(first) = applied.iter().min().copied() else {
        return Vec::new();
    };
    let mut order: Vec<usize> = (0..applied.len().min(started.len())).collect();
    order.sort_by_key(|&i| started[i]);
    let mut starts = applied.to_vec();
    for (rank, &index) in order.iter().enumerate() {
        let wait_s = ((rank + 1) as f64 - qps).max(0.0) / qps;
        let slot = first + chrono::TimeDelta::milliseconds((wait_s * 1000.0).round() as i64);
        starts[index] = applied[index].max(slot);
    }
    starts
}

/// Seconds from `from` to `to`, with millisecond resolution.
pub fn seconds_between(
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_lets_a_full_bucket_through_then_one_call_per_share_of_a_second() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
            .expect("a valid time")
            .to_utc();
        let at = |ms: i64| t0 + chrono::TimeDelta::milliseconds(ms);
        let applied = [at(0), at(0), at(0), at(0), at(3000), at(0)];
        // The order they started in, not the order they were applied, gives out the moments.
        let started = [at(1000), at(0), at(500), at(1500), at(3000), at(0)];
        let starts = budget_starts(&applied, &started, 2.0);
        // By start: #1 and #5 (ranks 0–1) at once; #2 half a second later, #0 a second, #3
        // 1.5 s; #4, applied at 3 s, waits for nothing.
        let expected = [at(1000), at(0), at(500), at(1500), at(3000), at(0)];
        assert_eq!(starts, expected);
        assert!(budget_starts(&[], &[], 10.0).is_empty());
    }

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces() {
        let stat = "42 (tokio rt) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1 1 1";
        assert_eq!(cpu_ticks(stat, "stat").unwrap(), 300);
    }

    #[test]
    fn reconciles_sum_every_kind() {
        let text = "# HELP ecs_image_operator_reconciles Reconciliations run\n\
                    ecs_image_operator_reconciles_total{kind=\"ImageCopy\"} 7\n\
                    ecs_image_operator_reconciles_total{kind=\"ImageImport\"} 2\n\
                    ecs_image_operator_reconcile_errors_total{kind=\"ImageCopy\",code=\"x\"} 5\n";
        assert_eq!(
            counter_total(text, "ecs_image_operator_reconciles_total"),
            9.0
        );
        assert_eq!(counter_total(text, "ecs_image_operator_reconcile"), 0.0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), Some(50.0));
        assert_eq!(percentile(&values, 0.99), Some(99.0));
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
