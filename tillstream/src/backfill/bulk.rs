//! Bulk operation lifecycle: start a query, wait for it (polling, or woken by the
//! `bulk_operations/finish` webhook), download its JSONL or its partial data.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::graphql::AdminClient;

/// What a bulk query reads.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Resource {
    Customers,
    Orders,
    Products,
}

impl Resource {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Resource::Customers => "customers",
            Resource::Orders => "orders",
            Resource::Products => "products",
        }
    }

    /// The bulk query. Nested connections (`lineItems`) come back as child lines carrying
    /// `__parentId`; `refunds` and `transactions` are lists and stay inline. Refund
    /// transactions are a connection inside a list, which bulk queries do not support, so a
    /// refund's money is read from its own `totalRefundedSet`.
    pub(crate) fn query(self, filter: &str) -> String {
        let filter = if filter.is_empty() {
            String::new()
        } else {
            format!("(query: {})", json!(filter))
        };
        match self {
            Resource::Customers => format!(
                "{{ customers{filter} {{ edges {{ node {{ id legacyResourceId firstName lastName state createdAt updatedAt tags \
                 defaultEmailAddress {{ emailAddress marketingState marketingOptInLevel marketingUpdatedAt }} \
                 defaultPhoneNumber {{ phoneNumber marketingState marketingOptInLevel marketingUpdatedAt }} \
                 defaultAddress {{ city provinceCode countryCodeV2 zip }} amountSpent {{ amount currencyCode }} numberOfOrders }} }} }} }}"
            ),
            Resource::Orders => {
                let money = "{ shopMoney { amount currencyCode } presentmentMoney { amount currencyCode } }";
                format!(
                    "{{ orders{filter} {{ edges {{ node {{ id legacyResourceId name email createdAt updatedAt processedAt cancelledAt cancelReason test \
                     currencyCode presentmentCurrencyCode displayFinancialStatus displayFulfillmentStatus sourceName discountCodes \
                     totalPriceSet {money} subtotalPriceSet {money} totalTaxSet {money} totalDiscountsSet {money} totalShippingPriceSet {money} \
                     totalRefundedSet {money} netPaymentSet {money} \
                     customer {{ id legacyResourceId email firstName lastName }} \
                     transactions {{ id kind status processedAt gateway test amountSet {money} }} \
                     refunds {{ id legacyResourceId createdAt note totalRefundedSet {money} }} \
                     lineItems {{ edges {{ node {{ id name title variantTitle sku vendor quantity originalUnitPriceSet {money} totalDiscountSet {money} \
                     variant {{ id legacyResourceId }} product {{ id legacyResourceId }} }} }} }} }} }} }} }}"
                )
            }
            // Two connections (variants, collections), one level deep: within the limits.
            Resource::Products => format!(
                "{{ products{filter} {{ edges {{ node {{ id legacyResourceId title handle vendor productType status tags createdAt updatedAt \
                 category {{ fullName }} featuredImage {{ id url }} \
                 variants {{ edges {{ node {{ id legacyResourceId title sku price compareAtPrice inventoryQuantity position image {{ id url }} }} }} }} \
                 collections {{ edges {{ node {{ id title handle }} }} }} }} }} }} }}"
            ),
        }
    }
}

/// Shopify search syntax for an `updated_at` range (both bounds inclusive).
pub(crate) fn search_filter(since: Option<&str>, until: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(s) = since {
        parts.push(format!("updated_at:>='{s}'"));
    }
    if let Some(u) = until {
        parts.push(format!("updated_at:<='{u}'"));
    }
    parts.join(" AND ")
}

/// A finished (or failed) operation.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub(crate) id: String,
    pub(crate) status: String,
    pub(crate) error_code: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) partial_url: Option<String>,
    pub(crate) object_count: u64,
    /// The result file's size in bytes, when reported (plans the spill).
    pub(crate) file_size: Option<u64>,
}

const STATUS_FIELDS: &str = "id status errorCode objectCount rootObjectCount fileSize url partialDataUrl createdAt completedAt";

/// Starts a bulk query and returns the operation id.
pub(crate) async fn start(
    client: &AdminClient,
    resource: Resource,
    filter: &str,
) -> anyhow::Result<String> {
    let mutation = "mutation run($query: String!) { bulkOperationRunQuery(query: $query) { bulkOperation { id status } userErrors { field message } } }";
    let data = client
        .query(mutation, json!({ "query": resource.query(filter) }), 10.0)
        .await?;
    let run = data
        .get("bulkOperationRunQuery")
        .context("no bulkOperationRunQuery in the answer")?;
    if let Some(errors) = run
        .get("userErrors")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
    {
        bail!(
            "Shopify refused the {} bulk query: {}",
            resource.as_str(),
            Value::Array(errors.clone())
        );
    }
    run.pointer("/bulkOperation/id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .context("bulkOperationRunQuery returned no operation id")
}

/// The operation's current state; `None` when Shopify no longer knows it.
pub(crate) async fn status(
    client: &AdminClient,
    id: &str,
) -> anyhow::Result<Option<(Finished, bool)>> {
    let q = format!(
        "query op($id: ID!) {{ bulkOperation(id: $id) {{ ... on BulkOperation {{ {STATUS_FIELDS} }} }} }}"
    );
    let data = client.query(&q, json!({ "id": id }), 1.0).await?;
    let Some(op) = data.get("bulkOperation").filter(|o| !o.is_null()) else {
        return Ok(None);
    };
    let s = |k: &str| op.get(k).and_then(Value::as_str).map(str::to_owned);
    let status = s("status").unwrap_or_default();
    let done = matches!(
        status.as_str(),
        "COMPLETED" | "FAILED" | "CANCELED" | "EXPIRED"
    );
    // UnsignedInt64 fields are strings in JSON; accept numbers too.
    let number = |k: &str| {
        op.get(k).and_then(|v| {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| v.as_u64())
        })
    };
    let count = number("objectCount").unwrap_or(0);
    Ok(Some((
        Finished {
            id: id.to_owned(),
            status,
            error_code: s("errorCode"),
            url: s("url"),
            partial_url: s("partialDataUrl"),
            object_count: count,
            file_size: number("fileSize"),
        },
        done,
    )))
}

/// Polls until the operation ends (`None`: Shopify no longer knows it); a
/// `bulk_operations/finish` notice wakes the loop early.
pub(crate) async fn wait(
    client: &AdminClient,
    id: &str,
    interval: Duration,
    notice: Option<Arc<Notify>>,
    mut progress: impl FnMut(&Finished),
) -> anyhow::Result<Option<Finished>> {
    loop {
        let Some((op, done)) = status(client, id).await? else {
            return Ok(None);
        };
        progress(&op);
        if done {
            return Ok(Some(op));
        }
        match &notice {
            Some(n) => {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = n.notified() => {}
                }
            }
            None => tokio::time::sleep(interval).await,
        }
    }
}

/// How long a download may go without receiving a byte.
const STALL: Duration = Duration::from_secs(60);

/// Streams a result (or partial data) file line by line into `line`, never holding more
/// than one network chunk and one line; the URL is pre-signed. `read` gets the bytes read so far.
pub(crate) async fn download(
    client: &AdminClient,
    url: &str,
    mut line: impl FnMut(&[u8]) -> anyhow::Result<()>,
    mut read: impl FnMut(u64),
) -> anyhow::Result<()> {
    // A multi-GB file takes minutes: no bound on the whole download (the client's 60 s would
    // cut it), only on a stalled connection, per chunk below.
    let mut resp = client
        .http()
        .get(url)
        .timeout(Duration::from_secs(7 * 24 * 3600))
        .send()
        .await
        .with_context(|| format!("downloading {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!(
            "downloading the bulk result answered {status} (URLs expire after 7 days; run again to start a new operation)"
        );
    }
    let mut rest: Vec<u8> = Vec::new();
    let mut total = 0u64;
    loop {
        let next = tokio::time::timeout(STALL, resp.chunk())
            .await
            .map_err(|_| anyhow::anyhow!("the bulk result download stalled for {STALL:?}"))?;
        let Some(chunk) = next.context("reading the bulk result")? else {
            break;
        };
        total += chunk.len() as u64;
        let mut start = 0;
        for end in memchr_all(&chunk) {
            if rest.is_empty() {
                line(&chunk[start..end])?;
            } else {
                rest.extend_from_slice(&chunk[start..end]);
                line(&rest)?;
                rest.clear();
            }
            start = end + 1;
        }
        rest.extend_from_slice(&chunk[start..]);
        read(total);
    }
    if !rest.is_empty() {
        line(&rest)?;
    }
    Ok(())
}

fn memchr_all(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_and_query() {
        let f = search_filter(Some("2025-01-01T00:00:00Z"), None);
        assert_eq!(f, "updated_at:>='2025-01-01T00:00:00Z'");
        let q = Resource::Orders.query(&f);
        assert!(
            q.starts_with("{ orders(query: \"updated_at:>='2025-01-01T00:00:00Z'\")"),
            "{q}"
        );
        assert!(q.contains("lineItems") && q.contains("refunds") && q.contains("transactions"));
        assert!(Resource::Customers.query("").starts_with("{ customers {"));
    }
}
