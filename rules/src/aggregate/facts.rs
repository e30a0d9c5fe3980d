//! What the aggregate keeps of each order and checkout: compact facts with sticky flags.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::is_zero;

/// Shopify's `financial_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinStatus {
    /// Not seen.
    #[default]
    Unknown,
    /// Awaiting payment.
    Pending,
    /// Authorised, not captured.
    Authorized,
    /// Partly paid.
    PartiallyPaid,
    /// Paid.
    Paid,
    /// Partly refunded.
    PartiallyRefunded,
    /// Fully refunded.
    Refunded,
    /// Authorisation voided.
    Voided,
}

impl FinStatus {
    /// Parses Shopify's spelling.
    pub fn parse(s: Option<&str>) -> Self {
        match s
            .map(str::trim)
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "pending" => Self::Pending,
            "authorized" => Self::Authorized,
            "partially_paid" => Self::PartiallyPaid,
            "paid" => Self::Paid,
            "partially_refunded" => Self::PartiallyRefunded,
            "refunded" => Self::Refunded,
            "voided" => Self::Voided,
            _ => Self::Unknown,
        }
    }

    /// Money was captured at some point (refunded states imply an earlier payment).
    pub fn implies_paid(self) -> bool {
        matches!(
            self,
            Self::PartiallyPaid | Self::Paid | Self::PartiallyRefunded | Self::Refunded
        )
    }

    /// The webhook spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Pending => "pending",
            Self::Authorized => "authorized",
            Self::PartiallyPaid => "partially_paid",
            Self::Paid => "paid",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
            Self::Voided => "voided",
        }
    }
}

/// A refund applied to an order, in shop money.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundFact {
    /// Refund id.
    #[serde(rename = "i")]
    pub id: u64,
    /// When (Unix ms).
    #[serde(rename = "t")]
    pub at_ms: i64,
    /// Amount in shop money.
    #[serde(rename = "v")]
    pub shop: Decimal,
    /// Amount only known in the presentment currency: converted with the order's own rate.
    #[serde(default, rename = "p", skip_serializing_if = "Option::is_none")]
    pub presentment: Option<Decimal>,
}

/// What is kept about one order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrderFact {
    /// Order id.
    #[serde(rename = "i")]
    pub id: u64,
    /// `processed_at` (else `created_at`, else event time), Unix ms: see [`OrderFact::merge_placed`].
    #[serde(default, rename = "t", skip_serializing_if = "is_zero")]
    pub placed_ms: i64,
    /// Where `placed_ms` came from: [`PLACED_PROCESSED`], [`PLACED_CREATED`] or 0 (event time).
    #[serde(default, rename = "pr", skip_serializing_if = "is_zero")]
    pub placed_rank: u8,
    /// `updated_at` of the payload the mutable fields come from.
    #[serde(default, rename = "u", skip_serializing_if = "is_zero")]
    pub updated_ms: i64,
    /// Total in shop money.
    #[serde(default, rename = "v", skip_serializing_if = "Decimal::is_zero")]
    pub total: Decimal,
    /// Total in presentment money when it differs from the shop currency.
    #[serde(default, rename = "pv", skip_serializing_if = "Option::is_none")]
    pub presentment_total: Option<Decimal>,
    /// Latest financial status.
    #[serde(default, rename = "s", skip_serializing_if = "is_unknown")]
    pub status: FinStatus,
    /// Sticky flags (`O_*`).
    #[serde(default, rename = "f", skip_serializing_if = "is_zero")]
    pub flags: u16,
    /// When cancelled (Unix ms).
    #[serde(default, rename = "c", skip_serializing_if = "Option::is_none")]
    pub cancelled_ms: Option<i64>,
    /// When deleted (`orders/delete`, Unix ms): the order leaves the figures from then on,
    /// not retroactively (see `ltv::deltas`).
    #[serde(default, rename = "d", skip_serializing_if = "Option::is_none")]
    pub deleted_ms: Option<i64>,
    /// Refunds, sorted by id.
    #[serde(default, rename = "r", skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<RefundFact>,
    /// Content hash of the lines of the payload the mutable fields come from.
    #[serde(default, rename = "lh", skip_serializing_if = "is_zero")]
    pub lines_hash: u64,
    /// Content hash of the last `trackPurchase` sent (0 = none).
    #[serde(default, rename = "h", skip_serializing_if = "is_zero")]
    pub purchase_hash: u64,
}

fn is_unknown(s: &FinStatus) -> bool {
    *s == FinStatus::Unknown
}

/// An order payload was seen (not just a refund or delete for it).
pub const O_KNOWN: u16 = 1;
/// Test order.
pub const O_TEST: u16 = 1 << 1;
/// Reached paid / partially paid at some point.
pub const O_PAID: u16 = 1 << 2;
/// Cancelled.
pub const O_CANCELLED: u16 = 1 << 3;
/// `orders/delete` seen: removed from every figure.
pub const O_DELETED: u16 = 1 << 4;
/// Fulfilled.
pub const O_FULFILLED: u16 = 1 << 5;
/// `order_fulfilled` handled.
pub const O_FULFILL_SENT: u16 = 1 << 6;
/// `order_cancelled` handled.
pub const O_CANCEL_SENT: u16 = 1 << 7;
/// Owner link forwarded to the order key.
pub const O_LINKED: u16 = 1 << 8;
/// Completion forwarded to the email key.
pub const O_COMPLETION_SENT: u16 = 1 << 9;

/// `placed_ms` came from `processed_at`.
pub const PLACED_PROCESSED: u8 = 2;
/// `placed_ms` came from `created_at`.
pub const PLACED_CREATED: u8 = 1;

/// The version of an order's mutable fields: newest `updated_at` first, then status, totals and
/// lines, so two different payloads are never tied and the winner does not depend on arrival.
pub type OrderVersion = (i64, FinStatus, Decimal, Option<Decimal>, u64);

impl OrderFact {
    /// Whether a flag is set.
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// The version of the mutable fields this fact holds.
    pub fn version(&self) -> OrderVersion {
        (
            self.updated_ms,
            self.status,
            self.total,
            self.presentment_total,
            self.lines_hash,
        )
    }

    /// The placed time is its own register: the best source wins (`processed_at` over
    /// `created_at` over event time), then the later instant, whatever the arrival order.
    /// Returns whether it changed.
    pub fn merge_placed(&mut self, rank: u8, at: i64) -> bool {
        let newer = (rank, at) > (self.placed_rank, self.placed_ms);
        if newer {
            self.placed_rank = rank;
            self.placed_ms = at;
        }
        newer
    }
}

/// What is kept about one checkout (the cart itself travels in the timer's payload).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CheckoutFact {
    /// Hash of the checkout token.
    #[serde(rename = "h")]
    pub token_hash: u64,
    /// Numeric checkout id, when payloads carry it.
    #[serde(default, rename = "i", skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Hash of the cart token (deletes may only carry that).
    #[serde(default, rename = "ct", skip_serializing_if = "is_zero")]
    pub cart_hash: u64,
    /// The abandonment clock: the latest `updated_at` (Unix ms) that restarted it; 0 when only
    /// a completion is known.
    #[serde(default, rename = "u", skip_serializing_if = "is_zero")]
    pub updated_ms: i64,
    /// Latest `updated_at` of any update (Unix ms), so an older cart never replaces a newer one.
    #[serde(default, rename = "lu", skip_serializing_if = "is_zero")]
    pub last_update_ms: i64,
    /// Completed (`completed_at` or an order with this token), Unix ms.
    #[serde(default, rename = "c", skip_serializing_if = "Option::is_none")]
    pub completed_ms: Option<i64>,
    /// Deleted, Unix ms.
    #[serde(default, rename = "d", skip_serializing_if = "Option::is_none")]
    pub deleted_ms: Option<i64>,
    /// Sticky flags (`K_*`).
    #[serde(default, rename = "f", skip_serializing_if = "is_zero")]
    pub flags: u8,
    /// Content hash of the last `updateCart` sent.
    #[serde(default, rename = "ch", skip_serializing_if = "is_zero")]
    pub cart_sent_hash: u64,
}

/// The abandonment was handled (sent or suppressed).
pub const K_FIRED: u8 = 1;
/// The checkout had an email or phone.
pub const K_CONTACT: u8 = 1 << 1;
/// Owner link forwarded to the checkout key.
pub const K_LINKED: u8 = 1 << 2;
