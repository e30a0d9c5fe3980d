//! Payloads of the customer-only topics: consent updates, tags, deletes and GDPR requests.

use serde::Deserialize;

use super::{Consent, Id, Ts, lenient_ts, tags};

/// `customers/delete`: only the id.
#[derive(Debug, Clone, Deserialize)]
pub struct CustomerDelete {
    /// Customer id.
    pub id: Id,
}

/// `customers_email_marketing_consent/update`.
#[derive(Debug, Clone, Deserialize)]
pub struct EmailConsentUpdate {
    /// Customer id.
    pub customer_id: Id,
    /// The address the consent is about.
    pub email_address: Option<String>,
    /// The consent (may be null).
    pub email_marketing_consent: Option<Consent>,
}

/// `customers_marketing_consent/update` (SMS, despite the name).
#[derive(Debug, Clone, Deserialize)]
pub struct SmsConsentUpdate {
    /// Customer id.
    pub id: Id,
    /// Phone.
    #[serde(default, deserialize_with = "crate::lenient::text")]
    pub phone: Option<String>,
    /// The consent (may be null).
    pub sms_marketing_consent: Option<Consent>,
}

/// The person in a compliance payload.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct CompliancePerson {
    /// Customer id.
    pub id: Option<Id>,
    /// Email.
    pub email: Option<String>,
    /// Phone.
    pub phone: Option<String>,
}

/// The data request reference.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct DataRequestRef {
    /// Request id.
    pub id: Option<Id>,
}

/// `customers/redact`, `customers/data_request`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Compliance {
    /// The customer.
    #[serde(default)]
    pub customer: Option<CompliancePerson>,
    /// Orders to redact.
    #[serde(default)]
    pub orders_to_redact: Vec<Id>,
    /// Orders requested.
    #[serde(default)]
    pub orders_requested: Vec<Id>,
    /// The request.
    pub data_request: Option<DataRequestRef>,
}

/// `customer.tags_added` / `customer.tags_removed` (2025-01+).
#[derive(Debug, Clone, Deserialize)]
pub struct TagsChange {
    /// The tags.
    #[serde(default, deserialize_with = "tags")]
    pub tags: Option<Vec<String>>,
    /// When.
    #[serde(default, rename = "occurredAt", deserialize_with = "lenient_ts")]
    pub occurred_at: Option<Ts>,
}
