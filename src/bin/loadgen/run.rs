//! The measurement loop: `connections` workers, each with one keep-alive
//! connection, either closed-loop (send the next request as soon as the last
//! answer arrived) or at a fixed rate with coordinated-omission correction
//! (latency counted from when the request *should* have been sent, so a
//! stalled server is charged for the requests it kept the client from sending).

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::sync::Barrier;

use crate::{
    client::{Conn, Target},
    scenario::Workload,
};

#[derive(Debug, Clone)]
pub struct Plan {
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Total requests per second over all connections (fixed-rate mode).
    pub rate: Option<f64>,
    /// A request not answered within this counts as an error.
    pub timeout: Duration,
}

/// Latencies in microseconds.
pub type Hist = Histogram<u64>;

pub fn histogram() -> Hist {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// What one run measured.
pub struct Measured {
    /// Requests sent in the measurement window and answered (any status).
    pub answered: u64,
    /// Transport errors and timeouts in the measurement window.
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the start of the window to the last answer.
    pub elapsed: Duration,
    /// Latency: from the intended send time in fixed-rate mode, from the
    /// actual send otherwise.
    pub latency: Hist,
    /// From the actual send (differs from `latency` only at a fixed rate).
    pub service_time: Hist,
    pub status: BTreeMap<u16, u64>,
    /// Per request kind (mixed runs).
    pub by_op: BTreeMap<&'static str, Hist>,
}

impl Measured {
    pub fn empty() -> Measured {
        Measured {
            answered: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latency: histogram(),
            service_time: histogram(),
            status: BTreeMap::new(),
            by_op: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: Measured) {
        self.answered += other.answered;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.elapsed = self.elapsed.max(other.elapsed);
        let _ = self.latency.add(&other.latency);
        let _ = self.service_time.add(&other.service_time);
        for (status, count) in other.status {
            *self.status.entry(status).or_default() += count;
        }
        for (op, hist) in other.by_op {
            let _ = self.by_op.entry(op).or_insert_with(histogram).add(&hist);
        }
    }

    /// Adds a later round of the same run (elapsed times add up).
    pub fn append(&mut self, other: Measured) {
        let elapsed = self.elapsed + other.elapsed;
        self.merge(other);
        self.elapsed = elapsed;
    }

    pub fn rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.answered as f64 / secs
        } else {
            0.0
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Runs `workload` against `target` and merges what every worker measured.
pub async fn run(
    target: &Target,
    plan: &Plan,
    workload: Arc<Workload>,
) -> anyhow::Result<Measured> {
    // Connect everyone before the clock starts.
    let mut conns = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        conns.push(Conn::open(target).await?);
    }
    let barrier = Arc::new(Barrier::new(plan.connections + 1));
    let interval = plan
        .rate
        .map(|rate| Duration::from_secs_f64(plan.connections as f64 / rate));
    let start = Instant::now() + Duration::from_millis(50);
    let mut workers = Vec::with_capacity(plan.connections);
    for (index, conn) in conns.into_iter().enumerate() {
        let worker = Worker {
            target: target.clone(),
            conn: Some(conn),
            workload: workload.clone(),
            rng: fastrand::Rng::with_seed(0x5eed ^ index as u64),
            start,
            // Fixed rate: spread the connections' schedules over one interval.
            offset: interval.map(|iv| iv.mul_f64(index as f64 / plan.connections as f64)),
            interval,
            plan: plan.clone(),
        };
        let barrier = barrier.clone();
        workers.push(tokio::spawn(async move {
            barrier.wait().await;
            worker.run().await
        }));
    }
    barrier.wait().await;
    let mut total = Measured::empty();
    for worker in workers {
        total.merge(worker.await?);
    }
    Ok(total)
}

struct Worker {
    target: Target,
    conn: Option<Conn>,
    workload: Arc<Workload>,
    rng: fastrand::Rng,
    start: Instant,
    offset: Option<Duration>,
    interval: Option<Duration>,
    plan: Plan,
}

impl Worker {
    async fn run(mut self) -> Measured {
        let mut m = Measured::empty();
        let measure_from = self.start + self.plan.warmup;
        let end = measure_from + self.plan.duration;
        let mut last_answer = measure_from;
        tokio::time::sleep_until(self.start.into()).await;
        let mut n: u32 = 0;
        loop {
            let intended = match (self.interval, self.offset) {
                (Some(interval), Some(offset)) => self.start + offset + interval * n,
                _ => Instant::now(),
            };
            n = n.saturating_add(1);
            if intended >= end {
                break;
            }
            if intended > Instant::now() {
                tokio::time::sleep_until(intended.into()).await;
            }
            let conn = match self.conn.as_mut() {
                Some(conn) => conn,
                None => match Conn::open(&self.target).await {
                    Ok(conn) => self.conn.insert(conn),
                    Err(error) => {
                        if intended >= measure_from {
                            m.errors += 1;
                            m.first_error.get_or_insert(format!("{error:#}"));
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let req = self.workload.next(&mut self.rng);
            let sent = Instant::now();
            let result = tokio::time::timeout(
                self.plan.timeout,
                conn.send(&req.method, &req.path, req.body.as_ref()),
            )
            .await;
            let done = Instant::now();
            let counted = intended >= measure_from;
            match result {
                Ok(Ok((status, _body))) => {
                    if counted {
                        m.answered += 1;
                        let latency = micros(done - intended);
                        m.latency.saturating_record(latency);
                        m.service_time.saturating_record(micros(done - sent));
                        *m.status.entry(status.as_u16()).or_default() += 1;
                        m.by_op
                            .entry(req.op)
                            .or_insert_with(histogram)
                            .saturating_record(latency);
                        last_answer = last_answer.max(done);
                    }
                }
                Ok(Err(error)) => {
                    self.conn = None;
                    if counted {
                        m.errors += 1;
                        m.first_error.get_or_insert(format!("{error:#}"));
                    }
                }
                Err(_) => {
                    self.conn = None;
                    if counted {
                        m.errors += 1;
                        m.first_error
                            .get_or_insert(format!("no answer within {:?}", self.plan.timeout));
                    }
                }
            }
        }
        m.elapsed = last_answer.max(end) - measure_from;
        m
    }
}
