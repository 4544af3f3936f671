//! The benchmark's figures: how they are derived from the raw measurements, the targets of the
//! performance issue next to them, the printed table and the JSON file.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::config::BenchConfig;
use super::measure::{ProcessSample, budget_starts, max, percentile, seconds_between};

/// What one side (the operator, or the baseline poller) did with its copies.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub objects_measured: usize,
    /// DescribeImages from the first apply until all were Ready.
    pub describe_calls: u64,
    pub copy_image_calls: u64,
    /// apply→Ready ÷ copy time: median and worst object.
    pub ready_time_ratio: Option<f64>,
    pub ready_time_ratio_max: Option<f64>,
    /// The same from the earliest moment the CopyImage budget let each copy start (see
    /// [`budget_starts`]): the wait for the budget, which no client of it can shorten, left out.
    pub ready_time_ratio_after_budget: Option<f64>,
    pub ready_time_ratio_after_budget_max: Option<f64>,
    /// Image Available → the Ready condition's `lastTransitionTime` (whole seconds).
    pub detect_lag_p50_s: Option<f64>,
    pub detect_lag_p99_s: Option<f64>,
    /// Image Available → the moment the benchmark saw it Ready (milliseconds).
    pub detect_lag_seen_p50_s: Option<f64>,
    pub detect_lag_seen_p99_s: Option<f64>,
}

impl Side {
    /// The per-object figures from `(applied, ready seen, Ready's lastTransitionTime, image
    /// Available at)` of each object, whose CopyImage calls share a budget of `qps` a second.
    pub fn from_copies(
        copy_seconds: f64,
        qps: f64,
        copies: impl Iterator<
            Item = (
                DateTime<Utc>,
                DateTime<Utc>,
                Option<DateTime<Utc>>,
                Option<DateTime<Utc>>,
            ),
        >,
    ) -> Side {
        let copies: Vec<_> = copies.collect();
        let applied: Vec<_> = copies.iter().map(|c| c.0).collect();
        // Every copy runs `copy_seconds` from its CopyImage (the emulator's region queue is
        // never used), so the order they became Available is the order they started.
        let started: Vec<_> = copies.iter().map(|c| c.3.unwrap_or(c.1)).collect();
        let mut ratios = Vec::new();
        let mut ratios_after_budget = Vec::new();
        let mut lag_seen = Vec::new();
        let mut lag_transition = Vec::new();
        for ((applied, seen, transition, available), budget_start) in copies
            .into_iter()
            .zip(budget_starts(&applied, &started, qps))
        {
            ratios.push(seconds_between(applied, seen) / copy_seconds);
            ratios_after_budget.push(seconds_between(budget_start, seen) / copy_seconds);
            if let Some(available) = available {
                lag_seen.push(seconds_between(available, seen));
                if let Some(transition) = transition {
                    lag_transition.push(seconds_between(available, transition));
                }
            }
        }
        Side {
            objects_measured: ratios.len(),
            ready_time_ratio: percentile(&ratios, 0.5),
            ready_time_ratio_max: max(&ratios),
            ready_time_ratio_after_budget: percentile(&ratios_after_budget, 0.5),
            ready_time_ratio_after_budget_max: max(&ratios_after_budget),
            detect_lag_p50_s: percentile(&lag_transition, 0.5),
            detect_lag_p99_s: percentile(&lag_transition, 0.99),
            detect_lag_seen_p50_s: percentile(&lag_seen, 0.5),
            detect_lag_seen_p99_s: percentile(&lag_seen, 0.99),
            ..Side::default()
        }
    }
}

/// Moments of the operator's run.
pub struct Phases {
    pub first_apply: DateTime<Utc>,
    pub applied: DateTime<Utc>,
    pub all_ready: DateTime<Utc>,
    pub rest_start: DateTime<Utc>,
    pub rest_end: DateTime<Utc>,
    pub delete_start: DateTime<Utc>,
    pub all_gone: DateTime<Utc>,
    pub last_copy_image: Option<DateTime<Utc>>,
}

/// What was read from the operator's process, `/metrics` and calls.
pub struct Operator {
    /// Before the first apply.
    pub idle: ProcessSample,
    pub at_rest_start: ProcessSample,
    pub at_rest_end: ProcessSample,
    /// After all objects were gone.
    pub end: ProcessSample,
    pub reconciles_at_rest: f64,
    /// The rise of the operator's own reconcile CPU counter over the at-rest phase, seconds.
    pub reconcile_cpu_at_rest: f64,
    pub steady_describe_calls_by_region: BTreeMap<String, u64>,
    pub calls_in_flight_and_at_rest: BTreeMap<String, u64>,
    pub calls_deleting: BTreeMap<String, u64>,
    /// Calls the emulator answered with an error code.
    pub failed_calls: u64,
}

pub struct Report {
    pub objects: usize,
    pub regions: usize,
    pub ours: Side,
    pub baseline: Side,
    pub rss_peak_mib: f64,
    pub cpu_seconds: f64,
    json: Value,
    targets: Vec<Target>,
}

/// A target of the performance issue and where this run stands.
struct Target {
    what: &'static str,
    limit: f64,
    value: Option<f64>,
    /// The number of objects the issue sets the target at, when it names one.
    size: Option<usize>,
}

impl Target {
    fn met(&self) -> Option<bool> {
        self.value.map(|v| v <= self.limit)
    }

    /// `met` or `NOT met`, qualified when this run is smaller than the target's size: a figure
    /// that scales with the objects may still miss at the size the issue names.
    fn verdict(&self, objects: usize) -> String {
        let verdict = match self.met() {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => return "-".into(),
        };
        match self.size {
            Some(size) if objects < size => format!("{verdict} (at {objects})"),
            _ => verdict.into(),
        }
    }

    fn label(&self) -> String {
        match self.size {
            Some(size) => format!("≤ {} @{size}", self.limit),
            None => format!("≤ {}", self.limit),
        }
    }
}

/// Full listing pages of every region: a region with `n` owned images takes ⌈n/100⌉ pages.
fn pages_for_one_listing(config: &BenchConfig) -> u64 {
    (0..config.regions)
        .map(|r| {
            let in_region = (config.objects + config.regions - 1 - r) / config.regions;
            in_region.div_ceil(100) as u64
        })
        .sum()
}

fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0).then(|| numerator / denominator)
}

/// Four decimals are more than any figure here is worth; the rest is float noise.
fn rounded(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

fn rounded_opt(value: Option<f64>) -> Option<f64> {
    value.map(rounded)
}

impl Report {
    pub fn new(
        config: &BenchConfig,
        phases: Phases,
        ours: Side,
        baseline: Side,
        operator: Operator,
        baseline_failed_polls: u64,
    ) -> Report {
        let n = config.objects as f64;
        let qps = f64::from(config.region_qps);
        let at_rest_s = seconds_between(phases.rest_start, phases.rest_end);
        let drift_interval_s = config.resync_interval.as_secs_f64();
        let steady_calls: u64 = operator.steady_describe_calls_by_region.values().sum();
        let steady_pages = ratio(
            steady_calls as f64,
            pages_for_one_listing(config) as f64 * (at_rest_s / drift_interval_s),
        );
        let describe_ratio = ratio(ours.describe_calls as f64, baseline.describe_calls as f64);
        let issue_s = phases
            .last_copy_image
            .map(|last| seconds_between(phases.first_apply, last));
        // CopyImage is called in the source region, so its budget is that region's QPS; the
        // figure against every region's budget together is kept beside it.
        let issue_ratio = issue_s.and_then(|s| ratio(s, n / qps));
        let issue_ratio_all_regions =
            issue_s.and_then(|s| ratio(s, n / (qps * config.regions as f64)));
        let cpu_at_rest = operator.at_rest_end.cpu_seconds - operator.at_rest_start.cpu_seconds;
        let noop_reconcile_us = ratio(operator.reconcile_cpu_at_rest, operator.reconciles_at_rest)
            .map(|s| s * 1_000_000.0);
        let process_cpu_per_reconcile_us =
            ratio(cpu_at_rest, operator.reconciles_at_rest).map(|s| s * 1_000_000.0);
        let rss_peak_mib = operator.end.rss_peak_mib;
        let rss_at_rest_mib = operator.at_rest_end.rss_mib;
        let cpu_seconds = operator.end.cpu_seconds;

        let targets = vec![
            Target {
                what: "describe_calls_ratio",
                limit: 0.02,
                value: describe_ratio,
                size: Some(1000),
            },
            Target {
                what: "steady_pages_per_100_images_per_interval",
                limit: 1.0,
                value: steady_pages,
                size: Some(10_000),
            },
            Target {
                what: "ready_time_ratio",
                limit: 1.05,
                value: ours.ready_time_ratio,
                size: Some(1000),
            },
            Target {
                what: "ready_time_ratio_max",
                limit: 1.05,
                value: ours.ready_time_ratio_max,
                size: Some(1000),
            },
            Target {
                what: "ready_time_ratio_after_budget",
                limit: 1.05,
                value: ours.ready_time_ratio_after_budget,
                size: Some(1000),
            },
            Target {
                what: "ready_time_ratio_after_budget_max",
                limit: 1.05,
                value: ours.ready_time_ratio_after_budget_max,
                size: Some(1000),
            },
            Target {
                what: "detect_lag_p50_s",
                limit: 1.0,
                value: ours.detect_lag_p50_s,
                size: None,
            },
            Target {
                what: "detect_lag_p99_s",
                limit: 3.0,
                value: ours.detect_lag_p99_s,
                size: None,
            },
            Target {
                what: "detect_lag_seen_p50_s",
                limit: 1.0,
                value: ours.detect_lag_seen_p50_s,
                size: None,
            },
            Target {
                what: "detect_lag_seen_p99_s",
                limit: 3.0,
                value: ours.detect_lag_seen_p99_s,
                size: None,
            },
            Target {
                what: "rss_peak_mib",
                limit: 64.0,
                value: Some(rss_peak_mib),
                size: Some(10_000),
            },
            Target {
                what: "noop_reconcile_us",
                limit: 200.0,
                value: noop_reconcile_us,
                size: None,
            },
            Target {
                what: "copyimage_issue_ratio",
                limit: 1.1,
                value: issue_ratio,
                size: Some(10_000),
            },
        ];

        let json = json!({
            "objects": config.objects,
            "regions": config.regions,
            "describe_calls_ours": ours.describe_calls,
            "describe_calls_baseline": baseline.describe_calls,
            "describe_calls_ratio": rounded_opt(describe_ratio),
            "steady_pages_per_100_images_per_interval": rounded_opt(steady_pages),
            "ready_time_ratio": rounded_opt(ours.ready_time_ratio),
            "ready_time_ratio_max": rounded_opt(ours.ready_time_ratio_max),
            "ready_time_ratio_after_budget": rounded_opt(ours.ready_time_ratio_after_budget),
            "ready_time_ratio_after_budget_max": rounded_opt(ours.ready_time_ratio_after_budget_max),
            "detect_lag_p50_s": ours.detect_lag_p50_s,
            "detect_lag_p99_s": ours.detect_lag_p99_s,
            "detect_lag_seen_p50_s": ours.detect_lag_seen_p50_s,
            "detect_lag_seen_p99_s": ours.detect_lag_seen_p99_s,
            "rss_idle_mib": rounded(operator.idle.rss_mib),
            "rss_peak_mib": rounded(rss_peak_mib),
            "rss_at_rest_mib": rounded(rss_at_rest_mib),
            "cpu_seconds": rounded(cpu_seconds),
            "cpu_seconds_at_rest": rounded(cpu_at_rest),
            "reconciles_at_rest": operator.reconciles_at_rest,
            "noop_reconcile_us": rounded_opt(noop_reconcile_us),
            "process_cpu_per_reconcile_at_rest_us": rounded_opt(process_cpu_per_reconcile_us),
            "copyimage_issue_s": issue_s,
            "copyimage_issue_ratio": rounded_opt(issue_ratio),
            "copyimage_issue_ratio_all_regions": rounded_opt(issue_ratio_all_regions),
            "copy_image_calls_ours": ours.copy_image_calls,
            "copy_image_calls_baseline": baseline.copy_image_calls,
            "steady_describe_calls": steady_calls,
            "steady_describe_calls_by_region": operator.steady_describe_calls_by_region,
            "steady_full_listing_pages": pages_for_one_listing(config),
            "baseline_ready_time_ratio": rounded_opt(baseline.ready_time_ratio),
            "baseline_ready_time_ratio_max": rounded_opt(baseline.ready_time_ratio_max),
            "baseline_ready_time_ratio_after_budget": rounded_opt(baseline.ready_time_ratio_after_budget),
            "baseline_ready_time_ratio_after_budget_max": rounded_opt(baseline.ready_time_ratio_after_budget_max),
            "baseline_detect_lag_p50_s": baseline.detect_lag_seen_p50_s,
            "baseline_detect_lag_p99_s": baseline.detect_lag_seen_p99_s,
            "baseline_failed_polls": baseline_failed_polls,
            "operator_calls_until_rest_end": operator.calls_in_flight_and_at_rest,
            "operator_calls_deleting": operator.calls_deleting,
            "operator_failed_calls": operator.failed_calls,
            "objects_measured": ours.objects_measured,
            "create_s": seconds_between(phases.first_apply, phases.applied),
            "all_ready_s": seconds_between(phases.first_apply, phases.all_ready),
            "at_rest_s": at_rest_s,
            "delete_s": seconds_between(phases.delete_start, phases.all_gone),
            "settings": {
                "build": config.build(),
                "copy_seconds": config.copy_seconds,
                "poll_interval_s": config.poll_interval.as_secs_f64(),
                "drift_interval_s": drift_interval_s,
                "region_qps": config.region_qps,
                "operator_concurrency": config.concurrency,
                "emulator_region_concurrency": config.objects,
                "api_parallelism": config.api_parallelism,
            },
            "targets": targets.iter().map(|t| json!({
                "metric": t.what,
                "limit": t.limit,
                "value": rounded_opt(t.value),
                "met": t.met(),
                "target_objects": t.size,
                "run_below_target_objects": t.size.is_some_and(|size| config.objects < size),
            })).collect::<Vec<_>>(),
            "machine": machine(),
            "commit": commit(),
            "finished_at": Utc::now().to_rfc3339(),
        });
        Report {
            objects: config.objects,
            regions: config.regions,
            ours,
            baseline,
            rss_peak_mib,
            cpu_seconds,
            json,
            targets,
        }
    }

    pub fn write(&self, path: &Path) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        }
        let text = serde_json::to_string_pretty(&self.json).expect("the report is JSON");
        std::fs::write(path, text + "\n")
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("bench: wrote {}", path.display());
    }

    /// The table: each figure, the baseline's where it has one, and the issue's target.
    pub fn print(&self) {
        let j = &self.json;
        let figure = |key: &str| format_number(&j[key]);
        let rows: Vec<[String; 5]> = vec![
            row(
                "objects × regions",
                format!("{} × {}", self.objects, self.regions),
                "",
                "",
            ),
            row(
                "DescribeImages until all Ready",
                figure("describe_calls_ours"),
                &figure("describe_calls_baseline"),
                "",
            ),
            row(
                "  ratio ours ÷ baseline",
                figure("describe_calls_ratio"),
                "",
                "describe_calls_ratio",
            ),
            row(
                "CopyImage",
                figure("copy_image_calls_ours"),
                &figure("copy_image_calls_baseline"),
                "",
            ),
            row(
                "steady pages /100 images/region/drift interval",
                figure("steady_pages_per_100_images_per_interval"),
                "",
                "steady_pages_per_100_images_per_interval",
            ),
            row(
                "apply→Ready ÷ copy time, median",
                figure("ready_time_ratio"),
                &figure("baseline_ready_time_ratio"),
                "ready_time_ratio",
            ),
            row(
                "apply→Ready ÷ copy time, max",
                figure("ready_time_ratio_max"),
                &figure("baseline_ready_time_ratio_max"),
                "ready_time_ratio_max",
            ),
            row(
                "  less the CopyImage budget's wait, median",
                figure("ready_time_ratio_after_budget"),
                &figure("baseline_ready_time_ratio_after_budget"),
                "ready_time_ratio_after_budget",
            ),
            row(
                "  less the CopyImage budget's wait, max",
                figure("ready_time_ratio_after_budget_max"),
                &figure("baseline_ready_time_ratio_after_budget_max"),
                "ready_time_ratio_after_budget_max",
            ),
            row(
                "detect lag p50 s (lastTransitionTime)",
                figure("detect_lag_p50_s"),
                "",
                "detect_lag_p50_s",
            ),
            row(
                "detect lag p99 s (lastTransitionTime)",
                figure("detect_lag_p99_s"),
                "",
                "detect_lag_p99_s",
            ),
            row(
                "detect lag p50 s (seen by watch)",
                figure("detect_lag_seen_p50_s"),
                &figure("baseline_detect_lag_p50_s"),
                "detect_lag_seen_p50_s",
            ),
            row(
                "detect lag p99 s (seen by watch)",
                figure("detect_lag_seen_p99_s"),
                &figure("baseline_detect_lag_p99_s"),
                "detect_lag_seen_p99_s",
            ),
            row("RSS idle MiB", figure("rss_idle_mib"), "", ""),
            row("RSS peak MiB", figure("rss_peak_mib"), "", "rss_peak_mib"),
            row("RSS at rest MiB", figure("rss_at_rest_mib"), "", ""),
            row("CPU s (whole run)", figure("cpu_seconds"), "", ""),
            row(
                "no-op reconcile µs CPU",
                figure("noop_reconcile_us"),
                "",
                "noop_reconcile_us",
            ),
            row(
                "  process CPU at rest ÷ reconciles µs",
                figure("process_cpu_per_reconcile_at_rest_us"),
                "",
                "",
            ),
            row(
                "CopyImage issue ÷ (N ÷ source region QPS)",
                figure("copyimage_issue_ratio"),
                "",
                "copyimage_issue_ratio",
            ),
            row(
                "  ÷ (N ÷ QPS × regions)",
                figure("copyimage_issue_ratio_all_regions"),
                "",
                "",
            ),
            row("first apply → all Ready s", figure("all_ready_s"), "", ""),
            row("delete → all gone s", figure("delete_s"), "", ""),
        ]
        .into_iter()
        .map(|mut r| {
            if !r[3].is_empty() {
                let key = std::mem::take(&mut r[3]);
                match self.targets.iter().find(|t| t.what == key) {
                    Some(t) => {
                        r[3] = t.label();
                        r[4] = t.verdict(self.objects);
                    }
                    None => r[3] = key,
                }
            }
            r
        })
        .collect();
        let header = [
            "figure".to_string(),
            "ours".into(),
            "baseline".into(),
            "target".into(),
            "".into(),
        ];
        let widths: Vec<usize> = (0..5)
            .map(|c| {
                std::iter::once(&header)
                    .chain(&rows)
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |r: &[String; 5]| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell}{}", " ".repeat(width - cell.chars().count())))
                .collect();
            println!("| {} |", cells.join(" | "));
        };
        line(&header);
        println!(
            "|{}|",
            widths
                .iter()
                .map(|w| "-".repeat(w + 2))
                .collect::<Vec<_>>()
                .join("|")
        );
        for r in &rows {
            line(r);
        }
    }
}

fn row(what: &str, ours: String, baseline: &str, target: &str) -> [String; 5] {
    [
        what.into(),
        ours,
        baseline.into(),
        target.into(),
        String::new(),
    ]
}

/// A number with at most three decimals (two above 10, one above 100); `-` when absent.
fn format_number(value: &Value) -> String {
    match value.as_f64() {
        None => "-".into(),
        Some(v) if value.is_u64() || value.is_i64() => format!("{v}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.1}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// CPU model, cores and memory of this machine, from /proc.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, name)| name.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    json!({
        "cpu": model,
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "memory_gib": memory_gib,
    })
}

/// The commit benchmarked, when git can tell.
fn commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(super::support::repo_root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(objects: usize, regions: usize) -> BenchConfig {
        BenchConfig {
            objects,
            regions,
            ..BenchConfig::from_env().expect("default settings")
        }
    }

    #[test]
    fn one_listing_takes_a_page_per_hundred_images_in_each_region() {
        assert_eq!(pages_for_one_listing(&config(200, 4)), 4);
        assert_eq!(pages_for_one_listing(&config(1000, 4)), 12);
        assert_eq!(pages_for_one_listing(&config(10_000, 4)), 100);
        assert_eq!(pages_for_one_listing(&config(101, 1)), 2);
    }

    #[test]
    fn a_verdict_below_the_targets_size_says_so() {
        let target = Target {
            what: "rss_peak_mib",
            limit: 64.0,
            value: Some(30.0),
            size: Some(10_000),
        };
        assert_eq!(target.verdict(200), "met (at 200)");
        assert_eq!(target.verdict(10_000), "met");
        let missed = Target {
            value: Some(70.0),
            ..target
        };
        assert_eq!(missed.verdict(10_000), "NOT met");
        assert_eq!(missed.label(), "≤ 64 @10000");
    }

    #[test]
    fn numbers_keep_a_readable_precision() {
        assert_eq!(format_number(&json!(12)), "12");
        assert_eq!(format_number(&json!(0.01234)), "0.012");
        assert_eq!(format_number(&json!(12.345)), "12.35");
        assert_eq!(format_number(&json!(1234.56)), "1234.6");
        assert_eq!(format_number(&Value::Null), "-");
    }
}
