//! The request shapes of each scenario, and the data they need, prepared
//! through the service's own API before the clock starts.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail, ensure};
use clap::ValueEnum;
use hyper::{Method, StatusCode, body::Bytes};
use serde_json::{Value, json};

use crate::client::Conn;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// POST /v1/reservations, each on a free slot (every request books).
    Create,
    /// GET /v1/reservations/{id} over the fixture's reservations.
    Get,
    /// GET /v1/resources/{id}/availability over `--window-days` days of a
    /// resource holding the fixture's reservations.
    Availability,
    /// GET /v1/reservations?resource_id=&from=&limit= (one page).
    List,
    /// `--read-percent` reads (get/availability/list 6:1:1), the rest creates.
    Mixed,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Create => "create",
            Scenario::Get => "get",
            Scenario::Availability => "availability",
            Scenario::List => "list",
            Scenario::Mixed => "mixed",
        }
    }
}

/// Knobs of the request shapes.
#[derive(Debug, Clone)]
pub struct Shape {
    pub scenario: Scenario,
    /// Resources the creates are spread over.
    pub resources: usize,
    /// Length of, and step between, the slots of consecutive creates.
    pub slot_minutes: i64,
    /// Reservations in the read fixture.
    pub fixture_reservations: usize,
    /// Days the fixture's reservations are spread over.
    pub fixture_days: i64,
    pub window_days: i64,
    pub list_limit: u32,
    pub read_percent: u32,
}

/// One request to send.
pub struct Req {
    pub op: &'static str,
    pub method: Method,
    pub path: String,
    pub body: Option<Bytes>,
}

/// Unique slots for creates: request n goes to resource n % R, slot n / R.
struct Creates {
    resources: Vec<String>,
    next: AtomicU64,
    base: i64,
    step: i64,
}

/// A resource holding the fixture reservations, read by get/availability/list.
struct Fixture {
    resource_id: String,
    reservation_ids: Vec<String>,
    /// Midnight UTC of the first day, in seconds.
    base: i64,
    days: i64,
}

pub struct Workload {
    shape: Shape,
    creates: Option<Creates>,
    fixture: Option<Fixture>,
}

const DAY: i64 = 86_400;
/// 2040-01-01T00:00:00Z.
const EPOCH_2040: i64 = 2_208_988_800;

fn instant(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A random day far in the future, so that runs against the same database
/// never meet each other's slots (they use fresh resources anyway).
fn random_base() -> i64 {
    EPOCH_2040 + fastrand::i64(0..1_500_000) * DAY
}

pub async fn create_resource(conn: &mut Conn, body: Value) -> anyhow::Result<String> {
    let (status, created) = conn
        .json(Method::POST, "/v1/resources", Some(&body))
        .await?;
    if status != StatusCode::CREATED {
        bail!("creating a resource answered {status}: {created}");
    }
    created["id"]
        .as_str()
        .map(str::to_owned)
        .context("the created resource has no id")
}

/// Books `items` with `POST /v1/reservations/batch` (at most 500 per call) and
/// returns their ids; every item must answer 201.
pub async fn book_batch(conn: &mut Conn, items: Vec<Value>) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(items.len());
    for chunk in items.chunks(500) {
        let (status, answer) = conn
            .json(
                Method::POST,
                "/v1/reservations/batch",
                Some(&json!({ "reservations": chunk })),
            )
            .await?;
        ensure!(
            status == StatusCode::OK,
            "batch answered {status}: {answer}"
        );
        let results = answer["results"]
            .as_array()
            .context("batch answer has no results")?;
        for result in results {
            ensure!(
                result["status"] == 201,
                "a batch item was not booked: {result}"
            );
            ids.push(
                result["reservation"]["id"]
                    .as_str()
                    .context("booked item without id")?
                    .to_owned(),
            );
        }
    }
    Ok(ids)
}

pub fn booking(resource_id: &str, start: i64, end: i64) -> Value {
    json!({"resource_id": resource_id, "starts_at": instant(start), "ends_at": instant(end)})
}

impl Workload {
    /// Creates what the scenario needs through the API on `conn`.
    pub async fn prepare(conn: &mut Conn, shape: Shape) -> anyhow::Result<Workload> {
        let wants_creates = matches!(shape.scenario, Scenario::Create | Scenario::Mixed);
        let wants_fixture = shape.scenario != Scenario::Create;
        let creates = if wants_creates {
            let mut resources = Vec::with_capacity(shape.resources);
            for i in 0..shape.resources.max(1) {
                resources.push(
                    create_resource(
                        conn,
                        json!({"name": format!("loadgen create {i}"), "capacity": 1000,
                               "slot_minutes": shape.slot_minutes.clamp(5, 1440)}),
                    )
                    .await?,
                );
            }
            Some(Creates {
                resources,
                next: AtomicU64::new(0),
                base: random_base(),
                step: shape.slot_minutes * 60,
            })
        } else {
            None
        };
        let fixture = if wants_fixture {
            Some(Fixture::prepare(conn, &shape).await?)
        } else {
            None
        };
        Ok(Workload {
            shape,
            creates,
            fixture,
        })
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The next request of this scenario.
    pub fn next(&self, rng: &mut fastrand::Rng) -> Req {
        match self.shape.scenario {
            Scenario::Create => self.create(),
            Scenario::Get => self.get(rng),
            Scenario::Availability => self.availability(rng),
            Scenario::List => self.list(rng),
            Scenario::Mixed => {
                if rng.u32(0..100) >= self.shape.read_percent {
                    return self.create();
                }
                match rng.u32(0..8) {
                    0 => self.availability(rng),
                    1 => self.list(rng),
                    _ => self.get(rng),
                }
            }
        }
    }

    fn create(&self) -> Req {
        let creates = self.creates.as_ref().expect("prepared for creates");
        let n = creates.next.fetch_add(1, Ordering::Relaxed);
        let count = creates.resources.len() as u64;
        let resource = &creates.resources[(n % count) as usize];
        let start = creates.base + (n / count) as i64 * creates.step;
        let body = format!(
            r#"{{"resource_id":"{resource}","starts_at":"{}","ends_at":"{}"}}"#,
            instant(start),
            instant(start + creates.step)
        );
        Req {
            op: "create",
            method: Method::POST,
            path: "/v1/reservations".to_owned(),
            body: Some(Bytes::from(body)),
        }
    }

    fn fixture(&self) -> &Fixture {
        self.fixture.as_ref().expect("prepared for reads")
    }

    fn get(&self, rng: &mut fastrand::Rng) -> Req {
        let ids = &self.fixture().reservation_ids;
        Req {
            op: "get",
            method: Method::GET,
            path: format!("/v1/reservations/{}", ids[rng.usize(..ids.len())]),
            body: None,
        }
    }

    /// A random whole day of the fixture such that `days` days fit after it.
    fn day(&self, rng: &mut fastrand::Rng, days: i64) -> i64 {
        let fixture = self.fixture();
        let last = (fixture.days - days).max(0);
        fixture.base + rng.i64(0..=last) * DAY
    }

    fn availability(&self, rng: &mut fastrand::Rng) -> Req {
        let window = self.shape.window_days;
        let from = self.day(rng, window);
        Req {
            op: "availability",
            method: Method::GET,
            path: format!(
                "/v1/resources/{}/availability?from={}&to={}",
                self.fixture().resource_id,
                instant(from),
                instant(from + window * DAY)
            ),
            body: None,
        }
    }

    fn list(&self, rng: &mut fastrand::Rng) -> Req {
        let from = self.day(rng, 1);
        Req {
            op: "list",
            method: Method::GET,
            path: format!(
                "/v1/reservations?resource_id={}&from={}&limit={}",
                self.fixture().resource_id,
                instant(from),
                self.shape.list_limit
            ),
            body: None,
        }
    }
}

impl Fixture {
    /// One resource (capacity 4, 30-minute slots, always open) holding
    /// `fixture_reservations` half-hour bookings spread evenly over
    /// `fixture_days` days: 1,000 over 10 days is about 2 per slot.
    async fn prepare(conn: &mut Conn, shape: &Shape) -> anyhow::Result<Fixture> {
        let days = shape.fixture_days.max(shape.window_days).max(1);
        let count = shape.fixture_reservations.max(1);
        let slots_per_day = 48i64;
        let per_slot = (count as i64 + days * slots_per_day - 1) / (days * slots_per_day);
        let resource_id = create_resource(
            conn,
            json!({"name": "loadgen fixture", "capacity": per_slot.max(4), "slot_minutes": 30}),
        )
        .await?;
        let base = random_base();
        let items: Vec<Value> = (0..count as i64)
            .map(|i| {
                let day = i % days;
                let slot = (i / days) % slots_per_day;
                let start = base + day * DAY + slot * 1800;
                booking(&resource_id, start, start + 1800)
            })
            .collect();
        let reservation_ids = book_batch(conn, items).await?;
        Ok(Fixture {
            resource_id,
            reservation_ids,
            base,
            days,
        })
    }
}
