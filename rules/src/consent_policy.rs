//! Two-way consent settings: which side is the source of truth per attribute, and what Iterable events mean.

use serde::{Deserialize, Serialize};

/// Which side wins for one attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceOfTruth {
    /// Shopify decides: a change made in Iterable is overwritten back in Iterable.
    Shopify,
    /// Iterable decides once it has said something: a change made in Shopify is overwritten
    /// back in Shopify (until then, Shopify's value stands).
    Iterable,
    /// The later change by event time wins, on either side (ties: Shopify).
    #[default]
    Latest,
}

/// `[consent.source_of_truth]`: per attribute. Profile fields other than consent come from
/// Shopify only (Iterable's system webhooks carry no profile changes), so they have no entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceOfTruthConfig {
    /// Email marketing consent.
    pub email: SourceOfTruth,
    /// SMS marketing consent.
    pub sms: SourceOfTruth,
}

impl Default for SourceOfTruthConfig {
    fn default() -> Self {
        // Consent carries legal weight: an unsubscribe clicked anywhere must stick.
        Self {
            email: SourceOfTruth::Latest,
            sms: SourceOfTruth::Latest,
        }
    }
}

/// `[consent.iterable_events]`: how Iterable system webhooks count as consent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IterableEventsConfig {
    /// An `emailComplaint` (marked as spam) unsubscribes email.
    pub complaint_unsubscribes: bool,
    /// An `emailBounce` that is hard (permanent) unsubscribes email.
    pub hard_bounce_unsubscribes: bool,
    /// First words of an inbound SMS (`smsReceived`) that withdraw SMS consent (case-insensitive).
    pub sms_stop_keywords: Vec<String>,
}

impl Default for IterableEventsConfig {
    fn default() -> Self {
        Self {
            complaint_unsubscribes: true,
            hard_bounce_unsubscribes: false,
            // The CTIA standard opt-out keywords.
            sms_stop_keywords: ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"]
                .map(String::from)
                .to_vec(),
        }
    }
}
