//! Results as text or JSON, with the service/baseline ratios and the targets
//! of BENCHMARKS.md.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    probes::{RssReport, SyncReport},
    run::{Hist, Measured, Plan},
    scenario::{Scenario, Shape},
};

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    pub fn of(hist: &Hist) -> Latency {
        Latency {
            p50_us: hist.value_at_quantile(0.50),
            p95_us: hist.value_at_quantile(0.95),
            p99_us: hist.value_at_quantile(0.99),
            p999_us: hist.value_at_quantile(0.999),
            max_us: hist.max(),
            mean_us: (hist.mean() * 10.0).round() / 10.0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub requests: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    pub elapsed_s: f64,
    pub rps: f64,
    /// Corrected for coordinated omission in fixed-rate mode.
    pub latency: Latency,
    /// Fixed-rate mode only: from the actual send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_time: Option<Latency>,
    pub status: BTreeMap<u16, u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_op: BTreeMap<&'static str, OpSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpSummary {
    pub requests: u64,
    pub latency: Latency,
}

impl Side {
    pub fn of(m: &Measured, fixed_rate: bool) -> Side {
        Side {
            requests: m.answered,
            errors: m.errors,
            first_error: m.first_error.clone(),
            elapsed_s: m.elapsed.as_secs_f64(),
            rps: (m.rps() * 10.0).round() / 10.0,
            latency: Latency::of(&m.latency),
            service_time: fixed_rate.then(|| Latency::of(&m.service_time)),
            status: m.status.clone(),
            by_op: if m.by_op.len() > 1 {
                m.by_op
                    .iter()
                    .map(|(op, h)| {
                        (
                            *op,
                            OpSummary {
                                requests: h.len(),
                                latency: Latency::of(h),
                            },
                        )
                    })
                    .collect()
            } else {
                BTreeMap::new()
            },
        }
    }
}

/// The targets: service/baseline req/s at least `rps`, p99 at most
/// `p99` times the baseline's.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Target {
    pub min_rps_ratio: f64,
    pub max_p99_ratio: f64,
}

pub fn target_for(shape: &Shape) -> Option<Target> {
    let (rps, p99) = match shape.scenario {
        Scenario::Create => (0.35, 3.0),
        Scenario::Get => (0.70, 2.0),
        Scenario::Availability if shape.window_days == 1 => (0.50, 3.0),
        Scenario::Availability => return None,
        Scenario::List if shape.list_limit == 50 => (0.25, 4.0),
        Scenario::List => return None,
        Scenario::Mixed if shape.read_percent == 80 => (0.50, 3.0),
        Scenario::Mixed => return None,
    };
    Some(Target {
        min_rps_ratio: rps,
        max_p99_ratio: p99,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub rps: f64,
    pub p99: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rps_met: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    pub connections: usize,
    /// Service and baseline alternated this many times.
    pub rounds: u32,
    pub duration_s: f64,
    pub warmup_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_days: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_limit: Option<u32>,
    pub service: Side,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Side>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<Ratio>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_memory: Option<RssReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncReport>,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Report {
    pub fn new(
        shape: &Shape,
        plan: &Plan,
        service: &Measured,
        baseline: Option<&Measured>,
        label: Option<String>,
    ) -> Report {
        let fixed = plan.rate.is_some();
        let service = Side::of(service, fixed);
        let baseline = baseline.map(|b| Side::of(b, fixed));
        let ratio = baseline.as_ref().map(|b| {
            let rps = round3(service.rps / b.rps.max(f64::MIN_POSITIVE));
            let p99 = round3(service.latency.p99_us as f64 / b.latency.p99_us.max(1) as f64);
            // Throughput targets are for closed-loop runs; at a fixed rate
            // both sides do the same req/s and only latency is compared.
            let target = target_for(shape);
            Ratio {
                rps,
                p99,
                target,
                rps_met: target.filter(|_| !fixed).map(|t| rps >= t.min_rps_ratio),
                p99_met: target.map(|t| p99 <= t.max_p99_ratio),
            }
        });
        Report {
            scenario: shape.scenario,
            label,
            mode: if fixed { "fixed-rate" } else { "closed-loop" },
            rate: plan.rate,
            connections: plan.connections,
            rounds: 1,
            duration_s: plan.duration.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            window_days: matches!(shape.scenario, Scenario::Availability | Scenario::Mixed)
                .then_some(shape.window_days),
            list_limit: matches!(shape.scenario, Scenario::List | Scenario::Mixed)
                .then_some(shape.list_limit),
            service,
            baseline,
            ratio,
            server_memory: None,
            sync: None,
        }
    }

    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = write!(
            out,
            "scenario {}{} — {}{}, {} connections, {:.0}s (+{:.0}s warm-up){}",
            self.scenario.as_str(),
            self.label
                .as_deref()
                .map(|l| format!(" [{l}]"))
                .unwrap_or_default(),
            self.mode,
            self.rate
                .map(|r| format!(" at {r} req/s"))
                .unwrap_or_default(),
            self.connections,
            self.duration_s,
            self.warmup_s,
            if self.rounds > 1 {
                format!(" in {} alternating rounds", self.rounds)
            } else {
                String::new()
            },
        );
        if let Some(days) = self.window_days {
            let _ = write!(out, ", window {days} d");
        }
        if let Some(limit) = self.list_limit {
            let _ = write!(out, ", page {limit}");
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "{:<10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}  status",
            "", "req/s", "p50", "p95", "p99", "p99.9", "max"
        );
        let mut side = |name: &str, s: &Side| {
            let _ = writeln!(
                out,
                "{:<10} {:>10.1} {:>9} {:>9} {:>9} {:>9} {:>9}  {}{}",
                name,
                s.rps,
                us(s.latency.p50_us),
                us(s.latency.p95_us),
                us(s.latency.p99_us),
                us(s.latency.p999_us),
                us(s.latency.max_us),
                s.status
                    .iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                if s.errors > 0 {
                    format!(
                        " errors:{} ({})",
                        s.errors,
                        s.first_error.as_deref().unwrap_or("")
                    )
                } else {
                    String::new()
                }
            );
            if let Some(st) = &s.service_time {
                let _ = writeln!(
                    out,
                    "{:<10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}  (service time, not corrected)",
                    "",
                    "",
                    us(st.p50_us),
                    us(st.p95_us),
                    us(st.p99_us),
                    us(st.p999_us),
                    us(st.max_us)
                );
            }
            for (op, o) in &s.by_op {
                let _ = writeln!(
                    out,
                    "  {:<8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}  ({} requests)",
                    op,
                    "",
                    us(o.latency.p50_us),
                    us(o.latency.p95_us),
                    us(o.latency.p99_us),
                    us(o.latency.p999_us),
                    us(o.latency.max_us),
                    o.requests
                );
            }
        };
        side("service", &self.service);
        if let Some(b) = &self.baseline {
            side("baseline", b);
        }
        if let Some(r) = &self.ratio {
            let _ = write!(out, "ratio      req/s {:.3}  p99 {:.2}x", r.rps, r.p99);
            if let Some(t) = r.target {
                let verdict = |met: Option<bool>| match met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "n/a",
                };
                let _ = write!(
                    out,
                    "   target req/s >= {:.2} ({}), p99 <= {:.0}x ({})",
                    t.min_rps_ratio,
                    verdict(r.rps_met),
                    t.max_p99_ratio,
                    verdict(r.p99_met)
                );
            }
            out.push('\n');
        }
        if let Some(m) = &self.server_memory {
            let _ = writeln!(
                out,
                "server pid {}: max RSS {:.1} MiB during the run (end {:.1} MiB, peak since start {:.1} MiB)",
                m.pid,
                m.max_rss_kib as f64 / 1024.0,
                m.end_rss_kib as f64 / 1024.0,
                m.hwm_kib as f64 / 1024.0
            );
        }
        if let Some(s) = &self.sync {
            let _ = writeln!(
                out,
                "sync outbox: max {} pending, {} at the end; {} rows sent during the run",
                s.max_pending, s.end_pending, s.rows_sent
            );
        }
        out
    }
}

/// Microseconds for humans.
pub fn us(v: u64) -> String {
    if v >= 10_000_000 {
        format!("{:.1}s", v as f64 / 1e6)
    } else if v >= 10_000 {
        format!("{:.1}ms", v as f64 / 1e3)
    } else if v >= 1_000 {
        format!("{:.2}ms", v as f64 / 1e3)
    } else {
        format!("{v}µs")
    }
}
