//! Latency probes: one signed webhook per delivery lane every second, each watched in iterable-sim until the command it causes is accepted.
//!
//! A probe's age is (first time iterable-sim shows its effect) − (the moment ingest answered its
//! webhook 2xx): Kafka → processor → Kafka → publisher lane → Iterable, under whatever load the
//! bench offers; iterable-sim is read every 100 ms, which bounds the resolution. Each lane has its own probe customer, so a
//! lane's age is what its own queue, limiter and budget cost, plus the shared path before it.
//!
//! * profile: `customers/update` of one customer, `first_name = probe-<k>` (`users/update`);
//! * events: `customers/create` of a new customer each time, the welcome event (`events/track`);
//! * purchases: a paid `orders/create` of one customer, total = k dollars (`trackPurchase`);
//! * carts: `checkouts/update` of one customer's checkout, quantity = k (`updateCart`).
//!
//! Profiles and carts are last-write-wins (the publisher coalesces them), so seeing probe k
//! also delivers every earlier one of that lane; events and purchases are each their own record.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use iterable_sim::{Filter, SimState};
use serde_json::{Value, json};

/// A delivery lane of the publisher, as the probes see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// `users/update` and bulk profile writes.
    Profile,
    /// Custom events (journey triggers).
    Events,
    /// `commerce/trackPurchase`.
    Purchases,
    /// `commerce/updateCart`.
    Carts,
}

impl Lane {
    /// Every probed lane.
    pub const ALL: [Lane; 4] = [Lane::Profile, Lane::Events, Lane::Purchases, Lane::Carts];

    /// The publisher's name of the lane (`tillstream_publisher_lane_*{lane}`).
    pub fn name(self) -> &'static str {
        match self {
            Lane::Profile => "profile",
            Lane::Events => "events",
            Lane::Purchases => "purchases",
            Lane::Carts => "carts",
        }
    }
}

/// Deliveries a probe's time lags behind the sender: more than shopify-sim's reorder window
/// (20), so a probe never moves a partition's stream time past a delivery still to come
/// (see [`Probes::round_at`]).
pub const PROBE_LAG_DELIVERIES: usize = 50;

const PROFILE_CUSTOMER: u64 = 9_999_000_001;
/// Events probe k is customer `EVENTS_BASE + k` (a welcome event is sent once per customer).
const EVENTS_BASE: u64 = 9_999_100_000;
const PURCHASE_CUSTOMER: u64 = 9_999_200_001;
const PURCHASE_ORDER_BASE: u64 = 9_999_300_000;
const CART_CUSTOMER: u64 = 9_999_400_001;
const PROBE_RANGE: u64 = 90_000;

/// What iterable-sim shows of one lane's probes.
enum Seen {
    /// Last write wins: the highest probe number shown covers every earlier one.
    UpTo(u64),
    /// One record per probe.
    Each(BTreeSet<u64>),
}

/// The probes of every lane: what was sent when, and the ages measured so far.
pub struct Probes {
    shop: String,
    sent: [BTreeMap<u64, Instant>; 4],
    ages: [Vec<f64>; 4],
    next: u64,
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn customer(id: u64, email: &str, first_name: &str, now: &str) -> Value {
    json!({"id": id, "email": email, "first_name": first_name, "last_name": "Bench",
        "state": "enabled", "created_at": "2026-01-01T00:00:00-05:00", "updated_at": now})
}

impl Probes {
    /// Probes of `shop` (the shop ingest accepts webhooks of).
    pub fn new(shop: &str) -> Self {
        Probes {
            shop: shop.to_owned(),
            sent: Default::default(),
            ages: Default::default(),
            next: 0,
        }
    }

    /// The next round: one delivery per lane, numbered `k`, stamped now.
    pub fn round(&mut self) -> (u64, Vec<(Lane, shopify_sim::Delivery)>) {
        self.round_at(chrono::Utc::now())
    }

    /// The next round stamped at `now` (event and business times): the soak stamps its probes
    /// with the scenario's time reached so far, so that in event-time mode they never move a
    /// partition's stream time ahead of the timeline (which would fire its timers early).
    pub fn round_at(
        &mut self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> (u64, Vec<(Lane, shopify_sim::Delivery)>) {
        self.next += 1;
        let k = self.next;
        let at = rfc3339(now);
        let ms = now.timestamp_millis();
        let body = |lane: Lane| -> (&'static str, Value) {
            match lane {
                Lane::Profile => (
                    "customers/update",
                    customer(
                        PROFILE_CUSTOMER,
                        "probe@bench.example.com",
                        &format!("probe-{k}"),
                        &at,
                    ),
                ),
                Lane::Events => {
                    let id = EVENTS_BASE + k;
                    let mut c = customer(id, &format!("probe-{id}@bench.example.com"), "P", &at);
                    c["created_at"] = Value::String(at.clone());
                    ("customers/create", c)
                }
                Lane::Purchases => {
                    let email = "probe-purchase@bench.example.com";
                    let total = format!("{k}.00");
                    let money = json!({"shop_money": {"amount": total, "currency_code": "USD"},
                        "presentment_money": {"amount": total, "currency_code": "USD"}});
                    let id = PURCHASE_ORDER_BASE + k;
                    (
                        "orders/create",
                        json!({"id": id, "name": format!("#P{k}"), "email": email,
                            "contact_email": email, "created_at": at, "updated_at": at,
                            "processed_at": at, "currency": "USD", "presentment_currency": "USD",
                            "total_price": total, "total_price_set": money,
                            "financial_status": "paid", "test": false,
                            "customer": customer(PURCHASE_CUSTOMER, email, "P", &at),
                            "line_items": [{"id": id, "variant_id": 1, "product_id": 1,
                                "sku": "PROBE", "title": "Probe", "name": "Probe", "quantity": 1,
                                "price": total, "price_set": money}]}),
                    )
                }
                Lane::Carts => {
                    let email = "probe-cart@bench.example.com";
                    (
                        "checkouts/update",
                        json!({"id": CART_CUSTOMER, "token": "probe-cart-token",
                            "cart_token": "probe-cart", "email": email,
                            "customer": customer(CART_CUSTOMER, email, "P", &at),
                            "created_at": "2026-01-01T00:00:00-05:00", "updated_at": at,
                            "currency": "USD", "total_price": "10.00",
                            "line_items": [{"variant_id": 1, "product_id": 1, "title": "Probe",
                                "quantity": k, "price": "10.00"}]}),
                    )
                }
            }
        };
        let deliveries = Lane::ALL
            .iter()
            .map(|&lane| {
                let (topic, b) = body(lane);
                let id = format!("bench-probe-{}-{k}-{ms}", lane.name());
                (lane, crate::delivery(&self.shop, topic, &id, ms, &b))
            })
            .collect();
        (k, deliveries)
    }

    /// Probe `k` of `lane` was accepted by ingest at `t`.
    pub fn sent(&mut self, lane: Lane, k: u64, t: Instant) {
        self.sent[lane as usize].insert(k, t);
    }

    fn seen(lane: Lane, sim: &SimState) -> Seen {
        let user = |id: u64| Filter {
            user_id: Some(id.to_string()),
            ..Filter::default()
        };
        match lane {
            Lane::Profile => Seen::UpTo(
                sim.profiles(&user(PROFILE_CUSTOMER))
                    .first()
                    .and_then(|p| {
                        p.data_fields
                            .get("firstName")?
                            .as_str()?
                            .strip_prefix("probe-")?
                            .parse()
                            .ok()
                    })
                    .unwrap_or(0),
            ),
            Lane::Carts => Seen::UpTo(
                sim.carts(&user(CART_CUSTOMER))
                    .first()
                    .and_then(|c| c.items.first()?.get("quantity")?.as_u64())
                    .unwrap_or(0),
            ),
            Lane::Events => Seen::Each(
                sim.events(&Filter {
                    name: Some("customer_created".into()),
                    ..Filter::default()
                })
                .iter()
                .filter_map(|e| e.user.user_id.as_deref()?.parse::<u64>().ok())
                .filter(|id| (EVENTS_BASE..EVENTS_BASE + PROBE_RANGE).contains(id))
                .map(|id| id - EVENTS_BASE)
                .collect(),
            ),
            Lane::Purchases => Seen::Each(
                sim.purchases(&user(PURCHASE_CUSTOMER))
                    .iter()
                    .map(|p| p.total.round() as u64)
                    .collect(),
            ),
        }
    }

    /// Reads iterable-sim once and records the age of every probe that shows up.
    pub fn observe(&mut self, sim: &SimState) {
        for lane in Lane::ALL {
            let i = lane as usize;
            if self.sent[i].is_empty() {
                continue;
            }
            let arrived: Vec<u64> = match Self::seen(lane, sim) {
                Seen::UpTo(k) => self.sent[i].range(..=k).map(|(j, _)| *j).collect(),
                Seen::Each(set) => self.sent[i]
                    .keys()
                    .filter(|j| set.contains(j))
                    .copied()
                    .collect(),
            };
            for j in arrived {
                if let Some(t) = self.sent[i].remove(&j) {
                    self.ages[i].push(t.elapsed().as_secs_f64());
                }
            }
        }
    }

    /// Ages (seconds) measured so far on `lane`, in the order they were observed.
    pub fn ages(&self, lane: Lane) -> &[f64] {
        &self.ages[lane as usize]
    }

    /// Age (seconds) of the oldest probe of `lane` sent and not seen yet: grows while a lane
    /// is stalled, when no new age can be measured.
    pub fn oldest_outstanding(&self, lane: Lane) -> Option<f64> {
        self.sent[lane as usize]
            .values()
            .min()
            .map(|t| t.elapsed().as_secs_f64())
    }

    /// Probes sent and not seen yet, all lanes.
    pub fn outstanding(&self) -> usize {
        self.sent.iter().map(BTreeMap::len).sum()
    }

    /// Per lane: probes seen, not seen, and age p50/p99/max in seconds.
    pub fn report(&self) -> Value {
        let mut out = serde_json::Map::new();
        for lane in Lane::ALL {
            let i = lane as usize;
            let mut v = age_summary(&self.ages[i]);
            v["probes_not_seen"] = json!(self.sent[i].len());
            out.insert(lane.name().into(), v);
        }
        Value::Object(out)
    }
}

/// `{"probes", "p50", "p99", "max"}` of some ages (seconds, to the millisecond).
pub(crate) fn age_summary(ages: &[f64]) -> Value {
    let mut ages = ages.to_vec();
    ages.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        ages.get(((ages.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .map(|v| (v * 1000.0).round() / 1000.0)
    };
    json!({"probes": ages.len(), "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)})
}
