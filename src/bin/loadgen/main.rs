//! `loadgen`: the load generator behind BENCHMARKS.md.
//!
//! ```text
//! loadgen --target http://127.0.0.1:8080 --token $TOKEN --scenario create \
//!         --connections 64 --duration 20s --baseline [--rate 5000] [--json]
//! loadgen seed  --target ... --token ... --reservations 1000000
//! loadgen drain --target ... --token ...
//! ```
//!
//! Scenarios prepare their own data through the API, then run `--connections`
//! keep-alive HTTP/1.1 connections (hyper) for `--duration` after a warm-up,
//! recording latencies in an HDR histogram. `--rate` sends at a fixed total
//! rate and measures latency from each request's intended send time
//! (coordinated-omission correction). `--baseline` runs the same request
//! shapes against a trivial axum server started in-process and prints the
//! service/baseline ratios. Only loopback targets are accepted, and every run
//! ends by itself.

mod baseline;
mod client;
mod probes;
mod report;
mod run;
mod scenario;
mod seed;

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::{
    baseline::Baseline,
    client::{Conn, Target},
    probes::{RssProbe, SyncProbe},
    report::Report,
    run::{Measured, Plan},
    scenario::{Scenario, Shape, Workload},
};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for reservoir (loopback targets only)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario (also what runs without a subcommand).
    Run(RunArgs),
    /// Store many reservations through the batch endpoint.
    Seed(seed::SeedArgs),
    /// Measure how fast the sync outbox drains into PostgreSQL.
    Drain(seed::DrainArgs),
}

/// Where the service is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Base URL of the service; must be a loopback address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Admin bearer token (admin keys are exempt from rate limits and quotas).
    #[arg(long, env = "RESERVOIR_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the token from a file instead, e.g. `<data_dir>/admin-token`.
    #[arg(long, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
}

impl Common {
    pub async fn target(&self) -> anyhow::Result<Target> {
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        Target::resolve(&self.target, token.as_deref()).await
    }
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, value_enum, default_value_t = Scenario::Create)]
    scenario: Scenario,
    /// Concurrent keep-alive connections (one worker each).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured time (e.g. 20s, 500ms, 2m).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Fixed total rate in requests/s, latency corrected for coordinated
    /// omission. Without it the load is closed-loop (as fast as answered).
    #[arg(long)]
    rate: Option<f64>,
    /// A request unanswered after this long counts as an error.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Also run the same shapes against a trivial in-process axum server and
    /// print the ratios.
    #[arg(long)]
    baseline: bool,
    /// Split `--duration` into this many rounds, alternating service and
    /// baseline (each round has its own warm-up).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Worker threads of the baseline server (the service's default runtime
    /// has one per core).
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(2, |n| n.get()))]
    baseline_threads: usize,
    /// Resources the creates are spread over.
    #[arg(long, default_value_t = 16)]
    resources: usize,
    /// Length of (and step between) consecutive creates' slots.
    #[arg(long, default_value_t = 30)]
    slot_minutes: i64,
    /// Reservations on the read fixture's resource.
    #[arg(long, default_value_t = 1000)]
    fixture_reservations: usize,
    /// Days they are spread over.
    #[arg(long, default_value_t = 10)]
    fixture_days: i64,
    /// Availability window.
    #[arg(long, default_value_t = 1)]
    window_days: i64,
    /// List page size.
    #[arg(long, default_value_t = 50)]
    list_limit: u32,
    /// Share of reads in `mixed`, in percent.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u32).range(0..=100))]
    read_percent: u32,
    /// Sample this process's resident memory during the run (the server's pid).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Poll /v1/sync/status every second during the run (sync must be on).
    #[arg(long)]
    watch_sync: bool,
    /// A free-form label copied into the output.
    #[arg(long)]
    label: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// `20s`, `500ms`, `2m`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("bad duration unit in {text:?} (ms, s, m, h)")),
    };
    if !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("duration {text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

async fn run_scenario(args: RunArgs) -> anyhow::Result<()> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if let Some(rate) = args.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        bail!("--rate must be positive");
    }
    let target = args.common.target().await?;
    let shape = Shape {
        scenario: args.scenario,
        resources: args.resources.max(1),
        slot_minutes: args.slot_minutes.clamp(5, 1440),
        fixture_reservations: args.fixture_reservations.max(1),
        fixture_days: args.fixture_days.max(1),
        window_days: args.window_days.clamp(1, 31),
        list_limit: args.list_limit.clamp(1, 200),
        read_percent: args.read_percent,
    };
    let plan = Plan {
        connections: args.connections,
        duration: args.duration,
        warmup: args.warmup,
        rate: args.rate,
        timeout: args.timeout,
    };
    let mut setup = Conn::open(&target).await?;
    let workload = Arc::new(Workload::prepare(&mut setup, shape.clone()).await?);
    drop(setup);
    if !args.json {
        eprintln!(
            "running {} against {} ({} connections, {:?} + {:?} warm-up)",
            shape.scenario.as_str(),
            target.addr,
            plan.connections,
            plan.duration,
            plan.warmup
        );
    }

    let rss = args.server_pid.map(RssProbe::start).transpose()?;
    let sync = if args.watch_sync {
        Some(SyncProbe::start(&target).await?)
    } else {
        None
    };
    // Service and baseline alternate round by round, so that a slow spell of
    // a shared machine hits both sides alike.
    let rounds = args.rounds.max(1);
    let round_plan = Plan {
        duration: plan.duration / rounds,
        ..plan.clone()
    };
    let baseline_server = if args.baseline {
        Some(Baseline::start(args.baseline_threads)?)
    } else {
        None
    };
    let mut service = Measured::empty();
    let mut baseline = baseline_server.as_ref().map(|_| Measured::empty());
    for round in 1..=rounds {
        if !args.json && rounds > 1 {
            eprintln!("round {round}/{rounds}");
        }
        service.append(run::run(&target, &round_plan, workload.clone()).await?);
        if let (Some(server), Some(measured)) = (&baseline_server, baseline.as_mut()) {
            let baseline_target = target.at(server.addr)?;
            measured.append(run::run(&baseline_target, &round_plan, workload.clone()).await?);
        }
    }
    drop(baseline_server);
    let server_memory = rss.map(RssProbe::finish);
    let sync = match sync {
        Some(probe) => Some(probe.finish().await?),
        None => None,
    };

    let mut report = Report::new(
        workload.shape(),
        &plan,
        &service,
        baseline.as_ref(),
        args.label,
    );
    report.rounds = rounds;
    report.server_memory = server_memory;
    report.sync = sync;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Run(args)) => run_scenario(args).await,
        Some(Command::Seed(args)) => seed::seed(args).await,
        Some(Command::Drain(args)) => seed::drain(args).await,
        None => run_scenario(cli.run).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadgen: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("2d").is_err());
    }

    #[tokio::test]
    async fn only_loopback_targets() {
        assert!(Target::resolve("http://127.0.0.1:8080", None).await.is_ok());
        assert!(Target::resolve("http://[::1]:8080", None).await.is_ok());
        assert!(Target::resolve("http://10.0.0.1:8080", None).await.is_err());
        assert!(Target::resolve("http://192.168.1.1", None).await.is_err());
        assert!(
            Target::resolve("https://127.0.0.1:8443", None)
                .await
                .is_err()
        );
    }
}
