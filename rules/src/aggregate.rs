//! The per-key aggregate: compact facts, merged so that duplicates and reordering do not matter.
//!
//! One [`State`] type serves every key kind: customer (`c`) and email (`e`) keys use
//! [`Person`], orders and checkouts; order (`o`) and checkout (`k`) keys only use [`Link`];
//! email keys also keep the [`Claim`]s of customers whose current email they are.
//! Whole payloads are never stored (except refunds or deletes parked on an entity key until
//! its owner is known). Every mutable fact is a last-writer-wins register on the payload's own
//! timestamp with a deterministic tie-break, and every flag only ever goes from false to true,
//! so applying the same facts in any order gives the same state. Field names are short and
//! defaults are skipped because the aggregate is written to the changelog on every change.

use serde::{Deserialize, Serialize};

mod facts;
pub use facts::*;

/// The aggregate the engine keeps per key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Who this key is (customer and email keys).
    #[serde(default, rename = "p", skip_serializing_if = "Option::is_none")]
    pub person: Option<Box<Person>>,
    /// Orders, sorted by id.
    #[serde(default, rename = "o", skip_serializing_if = "Vec::is_empty")]
    pub orders: Vec<OrderFact>,
    /// Checkouts, sorted by token hash.
    #[serde(default, rename = "k", skip_serializing_if = "Vec::is_empty")]
    pub checkouts: Vec<CheckoutFact>,
    /// Entity keys (`o/`, `k/`): who owns the entity, and what waits for that answer.
    #[serde(default, rename = "l", skip_serializing_if = "Option::is_none")]
    pub link: Option<Box<Link>>,
    /// Email keys: which customers claimed this address (the email → customer index).
    #[serde(default, rename = "cl", skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<Claim>,
    /// Email keys nobody claims and that never sent anything: the commands held until no claim
    /// can still be in flight (see `email_index::hold`), each an encoded
    /// [`schemas::IterableCommand`] in base64.
    #[serde(default, rename = "hc", skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
}

/// One customer's claim on an email key, a last-writer-wins register per customer: "this is my
/// current email" (`held`) or "it no longer is" (released), at the customer's email time, and
/// since when the customer has held it (so activity is attributed by when it happened, not by
/// which claim message arrived first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The customer key.
    #[serde(rename = "o")]
    pub owner: String,
    /// Business time of the email the customer reported (Unix ms).
    #[serde(rename = "t")]
    pub at: i64,
    /// The address is the customer's current one.
    #[serde(default, rename = "h", skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// Earliest held claim seen from this customer (Unix ms).
    #[serde(default, rename = "s", skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
}

impl Claim {
    /// Whether the customer held the address at `t`: from its earliest claim until its
    /// release (a release and a later re-claim are not told apart: the gap counts as held).
    fn holds_at(&self, t: i64) -> bool {
        // State written before `since` existed: a held claim counts from its time.
        let since = self.since.or(self.held.then_some(self.at));
        since.is_some_and(|s| s <= t) && (self.held || t < self.at)
    }
}

/// A last-writer-wins text register.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Lww {
    /// Timestamp of the write (Unix ms).
    #[serde(rename = "t")]
    pub at: i64,
    /// The value.
    #[serde(rename = "v")]
    pub value: String,
}

impl Lww {
    /// Writes if `(at, value)` is newer (ties broken by value, so any order converges).
    pub fn merge(slot: &mut Option<Lww>, at: i64, value: &str) -> bool {
        let newer = match slot {
            None => true,
            Some(cur) => (at, value) > (cur.at, cur.value.as_str()),
        };
        if newer {
            *slot = Some(Lww {
                at,
                value: value.to_owned(),
            });
        }
        newer
    }
}

/// Profile data from `customers/*` (and customers embedded in orders), newest `updated_at` wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Profile {
    /// The snapshot's `updated_at` (Unix ms).
    #[serde(rename = "t")]
    pub updated_ms: i64,
    /// First name.
    #[serde(default, rename = "fn", skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default, rename = "ln", skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Phone.
    #[serde(default, rename = "ph", skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Customer state.
    #[serde(default, rename = "st", skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Customer created (Unix ms).
    #[serde(default, rename = "c", skip_serializing_if = "Option::is_none")]
    pub created_ms: Option<i64>,
    /// City.
    #[serde(default, rename = "ci", skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Province code.
    #[serde(default, rename = "pr", skip_serializing_if = "Option::is_none")]
    pub province_code: Option<String>,
    /// Country code.
    #[serde(default, rename = "co", skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    /// Postal code.
    #[serde(default, rename = "z", skip_serializing_if = "Option::is_none")]
    pub zip: Option<String>,
}

/// Shopify's consent states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    /// Opted in.
    Subscribed,
    /// Never opted in.
    NotSubscribed,
    /// Opted out.
    Unsubscribed,
    /// Double opt-in not confirmed yet.
    Pending,
    /// Redacted.
    Redacted,
    /// Invalid address or number.
    Invalid,
}

impl ConsentState {
    /// Parses Shopify's lower-case (webhook) or upper-case (GraphQL) spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "subscribed" => Self::Subscribed,
            "not_subscribed" => Self::NotSubscribed,
            "unsubscribed" => Self::Unsubscribed,
            "pending" => Self::Pending,
            "redacted" => Self::Redacted,
            "invalid" => Self::Invalid,
            _ => return None,
        })
    }

    /// The webhook spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscribed => "subscribed",
            Self::NotSubscribed => "not_subscribed",
            Self::Unsubscribed => "unsubscribed",
            Self::Pending => "pending",
            Self::Redacted => "redacted",
            Self::Invalid => "invalid",
        }
    }
}

/// One channel's consent, newest `consent_updated_at` wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConsentFact {
    /// When it changed (Unix ms).
    #[serde(rename = "t")]
    pub at: i64,
    /// State.
    #[serde(rename = "s")]
    pub state: ConsentState,
    /// Opt-in level was `confirmed_opt_in`.
    #[serde(default, rename = "c", skip_serializing_if = "std::ops::Not::not")]
    pub confirmed: bool,
}

impl ConsentFact {
    /// Writes if newer (ties broken by content).
    pub fn merge(slot: &mut Option<ConsentFact>, new: ConsentFact) -> bool {
        let newer = slot.is_none_or(|cur| new > cur);
        if newer {
            *slot = Some(new);
        }
        newer
    }
}

/// A lapse that was recorded (and perhaps announced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lapse {
    /// The last order before the lapse.
    #[serde(rename = "o")]
    pub order_id: u64,
    /// When the lapse came due (Unix ms).
    #[serde(rename = "t")]
    pub due_ms: i64,
}

/// What a customer or email key knows about its person.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Person {
    /// Email (customer keys; the key itself is the email for email keys).
    #[serde(default, rename = "e", skip_serializing_if = "Option::is_none")]
    pub email: Option<Lww>,
    /// Profile snapshot.
    #[serde(default, rename = "pf", skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// Tags (legacy payloads and tag topics).
    #[serde(default, rename = "tg", skip_serializing_if = "Option::is_none")]
    pub tags: Option<Lww>,
    /// Email marketing consent.
    #[serde(default, rename = "ec", skip_serializing_if = "Option::is_none")]
    pub email_consent: Option<ConsentFact>,
    /// SMS marketing consent.
    #[serde(default, rename = "sc", skip_serializing_if = "Option::is_none")]
    pub sms_consent: Option<ConsentFact>,
    /// Shop currency, from orders.
    #[serde(default, rename = "cu", skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Sticky flags (`P_*`).
    #[serde(default, rename = "f", skip_serializing_if = "is_zero")]
    pub flags: u16,
    /// Current tier (0 = base, i = `levels[i-1]`).
    #[serde(default, rename = "ti", skip_serializing_if = "is_zero")]
    pub tier: u8,
    /// Tiers whose upgrade event was sent (bit i = `levels[i]`).
    #[serde(default, rename = "ta", skip_serializing_if = "is_zero")]
    pub tiers_announced: u32,
    /// Tiers reached whose announcement timer is armed (bit i = `levels[i]`).
    #[serde(default, rename = "tw", skip_serializing_if = "is_zero")]
    pub tiers_armed: u32,
    /// The lapse in progress, if any.
    #[serde(default, rename = "la", skip_serializing_if = "Option::is_none")]
    pub lapse: Option<Lapse>,
    /// Latest refund (Unix ms).
    #[serde(default, rename = "rf", skip_serializing_if = "Option::is_none")]
    pub last_refund_ms: Option<i64>,
    /// Iterable lists tillstream subscribed this person to.
    #[serde(default, rename = "ls", skip_serializing_if = "Vec::is_empty")]
    pub lists: Vec<i64>,
    /// Unsubscribed-channel set last sent (bit 0 email, bit 1 SMS), if ever sent.
    #[serde(default, rename = "ch", skip_serializing_if = "Option::is_none")]
    pub channels_sent: Option<u8>,
    /// The order `first_purchase` announced.
    #[serde(default, rename = "fo", skip_serializing_if = "Option::is_none")]
    pub first_purchase_order: Option<u64>,
    /// Orders placed by this email under a customer key: `(order id, placed ms)`, newest kept.
    #[serde(default, rename = "xo", skip_serializing_if = "Vec::is_empty")]
    pub external_orders: Vec<(u64, i64)>,
    /// Two-way consent: what Iterable reported and what tillstream wrote (only once an Iterable
    /// consent event was seen for this person, so one-way customers pay nothing for it).
    #[serde(default, rename = "cw", skip_serializing_if = "Option::is_none")]
    pub two_way: Option<Box<TwoWay>>,
    /// The `first_purchase` waiting for its facts (until announced).
    #[serde(default, rename = "fp", skip_serializing_if = "Option::is_none")]
    pub first_pending: Option<FirstPending>,
    /// `order_refunded` announcements waiting for their facts.
    #[serde(default, rename = "rp", skip_serializing_if = "Vec::is_empty")]
    pub refunds_pending: Vec<PendingRefund>,
}

/// An `order_refunded` not announced yet (its timer is armed at the refund's time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRefund {
    /// The order.
    #[serde(rename = "o")]
    pub order_id: u64,
    /// The refund.
    #[serde(rename = "r")]
    pub refund_id: u64,
    /// The merchant's note, which the facts do not keep.
    #[serde(default, rename = "n", skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A `first_purchase` not announced yet: the earliest paid order known so far, and the fields
/// its newest payload gave. Kept only until the announcement, so it costs nothing afterwards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FirstPending {
    /// The order.
    #[serde(rename = "o")]
    pub order_id: u64,
    /// Placed time the timer is armed for (`i64::MIN`: not armed yet).
    #[serde(rename = "t")]
    pub armed_ms: i64,
    /// Fields of the order's newest payload (empty: only the fact is known, e.g. a handed-over
    /// guest order whose payload never reached this key).
    #[serde(
        default,
        rename = "d",
        skip_serializing_if = "serde_json::Map::is_empty"
    )]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// The last consent write to Shopify and what is known of it. Transitions (all in
/// `two_way::record_shopify` and `two_way::decide`): none or `Landed` → `Pending` (we write);
/// `Pending` → `Landed` (its echo: Shopify holds it); `Pending` → `Contested` (a different
/// change made in Shopify after our decision was reported first); `Landed` → `Contested` (such a
/// change reported after the echo but within `two_way::WRITE_SETTLE_MS` of our decision: it
/// may have reached Shopify before our write did); `Landed` → none (a change reported later
/// than that); `Contested` → `Pending` (we write the effective consent again with a newer
/// timestamp, which settles which one Shopify keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShopifyWrite {
    /// Written; Shopify is believed to hold it.
    #[serde(rename = "p")]
    Pending(ConsentFact),
    /// Written and echoed.
    #[serde(rename = "l")]
    Landed(ConsentFact),
    /// Written, and a different change made in Shopify may have been applied after it.
    #[serde(rename = "c")]
    Contested(ConsentFact),
}

/// Two-way consent state of one person (rules/src/two_way.rs). Shopify's side is
/// `Person::email_consent` / `sms_consent` (what Shopify holds, origin Shopify).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoWay {
    /// Email consent as the user last changed it in Iterable (origin Iterable, event time).
    #[serde(default, rename = "ie", skip_serializing_if = "Option::is_none")]
    pub iterable_email: Option<ConsentFact>,
    /// SMS consent as the user last changed it in Iterable.
    #[serde(default, rename = "is", skip_serializing_if = "Option::is_none")]
    pub iterable_sms: Option<ConsentFact>,
    /// Email consent written to Shopify whose echo (same state and `consent_updated_at`) has
    /// not come back yet: Shopify is believed to hold it.
    #[serde(default, rename = "pe", skip_serializing_if = "Option::is_none")]
    pub shopify_pending_email: Option<ShopifyWrite>,
    /// SMS consent written to Shopify, echo awaited.
    #[serde(default, rename = "ps", skip_serializing_if = "Option::is_none")]
    pub shopify_pending_sms: Option<ShopifyWrite>,
    /// Email consent last told to Iterable (through lists and channels).
    #[serde(default, rename = "te", skip_serializing_if = "Option::is_none")]
    pub told_email: Option<bool>,
    /// SMS consent last told to Iterable.
    #[serde(default, rename = "ts", skip_serializing_if = "Option::is_none")]
    pub told_sms: Option<bool>,
    /// Email consent told to Iterable whose system webhook (our own write echoed) is awaited.
    #[serde(default, rename = "ee", skip_serializing_if = "Option::is_none")]
    pub iterable_echo_email: Option<bool>,
    /// SMS consent told to Iterable, echo awaited.
    #[serde(default, rename = "es", skip_serializing_if = "Option::is_none")]
    pub iterable_echo_sms: Option<bool>,
    /// Event time of the latest email report from Iterable (user change or echo): an older
    /// report delivered late says nothing about what Iterable holds now.
    #[serde(default, rename = "ra", skip_serializing_if = "Option::is_none")]
    pub iterable_seen_email: Option<i64>,
    /// Event time of the latest SMS report from Iterable.
    #[serde(default, rename = "rb", skip_serializing_if = "Option::is_none")]
    pub iterable_seen_sms: Option<i64>,
}

/// `customers/create` was seen.
pub const P_CREATED: u16 = 1;
/// `customer_created` was handled (sent or suppressed).
pub const P_CREATED_SENT: u16 = 1 << 1;
/// `first_purchase` was handled.
pub const P_FIRST_PURCHASE: u16 = 1 << 2;
/// The recent-refund flag is on.
pub const P_RECENT_REFUND: u16 = 1 << 3;

/// Email keys: a guest profile was written to Iterable before a customer claimed the address
/// (so an erasure must still reach that user).
pub const P_GUEST_SENT: u16 = 1 << 4;

/// Email keys: the guest's held commands went out (no customer had claimed the address when
/// every input up to them was in); from then on the guest's commands go out at once.
pub const P_GUEST_RELEASED: u16 = 1 << 5;

/// Serde's skip test for counters, flags and times that default to zero.
fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// An envelope parked on an entity key until the owner is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    /// Topic.
    pub topic: String,
    /// Delivery id.
    pub delivery_id: String,
    /// Event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// API version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Triggered at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_at_ms: Option<i64>,
    /// Received at.
    pub received_at_ms: i64,
    /// From the backfill.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backfill: bool,
    /// Webhook name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_name: Option<String>,
    /// Body (JSON text).
    pub body: String,
}

/// Owner of an entity key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// Not known yet: park what arrives.
    Unknown,
    /// The customer or email key that owns it.
    Key(String),
}

/// State of an entity key (`o/{order}`, `k/{checkout}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Who owns the entity.
    pub owner: Owner,
    /// `at` of the link that set the owner, so the newest link wins.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub at_ms: i64,
    /// Envelopes waiting for the owner, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parked: Vec<Parked>,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            owner: Owner::Unknown,
            at_ms: 0,
            parked: Vec::new(),
        }
    }
}

impl State {
    /// The order with this id, inserted if absent (orders stay sorted by id).
    pub fn order_mut(&mut self, id: u64) -> &mut OrderFact {
        sorted_entry(
            &mut self.orders,
            id,
            |o| o.id,
            || OrderFact {
                id,
                ..OrderFact::default()
            },
        )
    }

    /// The checkout with this token hash, inserted if absent.
    pub fn checkout_mut(&mut self, token_hash: u64) -> &mut CheckoutFact {
        sorted_entry(
            &mut self.checkouts,
            token_hash,
            |c| c.token_hash,
            || CheckoutFact {
                token_hash,
                ..CheckoutFact::default()
            },
        )
    }

    /// The person, created if absent.
    pub fn person_mut(&mut self) -> &mut Person {
        self.person.get_or_insert_with(Box::default)
    }

    /// Email keys: the customer key that owns this address (newest held claim), if any.
    pub fn email_owner(&self) -> Option<&str> {
        self.claims
            .iter()
            .filter(|c| c.held)
            .max_by(|a, b| (a.at, &a.owner).cmp(&(b.at, &b.owner)))
            .map(|c| c.owner.as_str())
    }

    /// Email keys: the customer whose activity happened at `t` (business time): the one holding
    /// the address then (the most recent claimant if several did); before anyone held it, the
    /// first claimant (a guest who registers later brings their history); none after a release
    /// with no other holder (the address is a guest's again).
    pub fn email_owner_at(&self, t: i64) -> Option<&str> {
        if let Some(c) = self
            .claims
            .iter()
            .filter(|c| c.holds_at(t))
            .max_by(|a, b| (a.since, &a.owner).cmp(&(b.since, &b.owner)))
        {
            return Some(c.owner.as_str());
        }
        self.claims
            .iter()
            .filter_map(|c| c.since.map(|s| (s, c)))
            .min_by(|(a, x), (b, y)| (a, &x.owner).cmp(&(b, &y.owner)))
            .filter(|(s, _)| t < *s)
            .map(|(_, c)| c.owner.as_str())
    }

    /// Applies a claim or release; per customer the newest wins, a release wins a tie (so any
    /// arrival order converges), and the earliest held claim is kept as `since`. Returns
    /// whether anything changed.
    pub fn merge_claim(&mut self, owner: &str, at: i64, held: bool) -> bool {
        match self.claims.iter_mut().find(|c| c.owner == owner) {
            Some(c) => {
                let newer = (at, !held) > (c.at, !c.held);
                if newer {
                    c.at = at;
                    c.held = held;
                }
                // `i64::MIN` is a fallback time (an address known only from the consent
                // topic), claimed only when nothing better was known: it does not date it.
                let earlier = held && at != i64::MIN && c.since.is_none_or(|s| at < s);
                if earlier {
                    c.since = Some(at);
                }
                newer || earlier
            }
            None => {
                self.claims.push(Claim {
                    owner: owner.to_owned(),
                    at,
                    held,
                    since: (held && at != i64::MIN).then_some(at),
                });
                self.claims.sort_by(|a, b| a.owner.cmp(&b.owner));
                true
            }
        }
    }
}

/// The entry of `items` (sorted by `key_of`) with this key, inserted from `new` if absent.
fn sorted_entry<T>(
    items: &mut Vec<T>,
    key: u64,
    key_of: impl FnMut(&T) -> u64,
    new: impl FnOnce() -> T,
) -> &mut T {
    let i = match items.binary_search_by_key(&key, key_of) {
        Ok(i) => i,
        Err(i) => {
            items.insert(i, new());
            i
        }
    };
    &mut items[i]
}

/// Keeps the earlier of a recorded time and `at` (facts may arrive in any order).
pub(crate) fn keep_earliest(slot: &mut Option<i64>, at: i64) {
    *slot = Some(slot.map_or(at, |x| x.min(at)));
}
