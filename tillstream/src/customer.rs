//! `tillstream customer <key>`: asks any processor, follows the answer to the owner, and
//! prints the readable view as a table (`--json`: the view as JSON; `--raw`: the internal form).

use std::fmt::Write as _;

use anyhow::{Context, bail};
use serde_json::Value;

/// Arguments of `tillstream customer`.
#[derive(Debug, clap::Args)]
pub(crate) struct CustomerArgs {
    /// The key, e.g. `demo.myshopify.com/c/123` (or just the id with `--shop`).
    key: String,
    /// Shop domain, when `key` is a bare customer id.
    #[arg(long)]
    shop: Option<String>,
    /// Any processor instance; the CLI follows the answer to the owner.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8081",
        env = "TILLSTREAM_PROCESSOR_URL"
    )]
    processor: String,
    /// Print the view as JSON (for scripts) instead of a table.
    #[arg(long)]
    json: bool,
    /// Print the engine's internal form (packed aggregate, epoch milliseconds) as JSON.
    #[arg(long, conflicts_with = "json")]
    raw: bool,
}

/// Queries the owner of the key and prints its answer.
pub(crate) async fn show(args: &CustomerArgs) -> anyhow::Result<()> {
    let key = match (&args.shop, args.key.contains('/')) {
        (Some(shop), false) => format!("{shop}/c/{}", args.key),
        _ => args.key.clone(),
    };
    let (status, body) = query(&args.processor, &key, args.raw).await?;
    if args.raw || args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else if status == 404 {
        println!(
            "No state for {key} (partition {}): the processor has not seen this key, or it was erased.",
            body["partition"]
        );
    } else {
        print!("{}", table(&body));
    }
    Ok(())
}

/// GETs the key from `processor`, following 421 answers to the owning instance.
async fn query(processor: &str, key: &str, raw: bool) -> anyhow::Result<(u16, Value)> {
    let client = reqwest::Client::new();
    let mut base = processor.trim_end_matches('/').to_owned();
    for _ in 0..3 {
        // Keys contain slashes (`{shop}/c/{id}`): one path segment, so percent-encoded.
        let mut url = format!("{base}/customers/{}", encode_segment(key));
        if raw {
            url.push_str("?raw=true");
        }
        let resp = client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        match status.as_u16() {
            code @ (200 | 404) => return Ok((code, body)),
            // 421: another instance owns the partition; its advertised URL is the owner.
            421 => match body.get("owner").and_then(|o| o.as_str()) {
                Some(owner) if owner.starts_with("http") => {
                    tracing::debug!(owner, "Following the query to the owner.");
                    base = owner.trim_end_matches('/').to_owned();
                }
                _ => bail!(
                    "partition {} of {key} has no owner right now (rebalancing?)",
                    body["partition"]
                ),
            },
            _ => bail!("{url} answered {status}: {body}"),
        }
    }
    bail!("could not find the owner of {key}")
}

/// The view as aligned `label  value` rows.
fn table(v: &Value) -> String {
    let mut rows: Vec<(&str, String)> = Vec::new();
    let s = |v: &Value| v.as_str().map(str::to_owned);
    let c = &v["customer"];
    let id = &c["identity"];
    rows.push((
        "Key",
        format!("{} (partition {})", str_or(&v["key"], "?"), v["partition"]),
    ));
    if !id.is_null() {
        let mut who = vec![str_or(&id["kind"], "?")];
        who.extend(s(&id["customer_id"]).map(|i| format!("id {i}")));
        who.extend(s(&id["email"]));
        rows.push(("Identity", who.join(" · ")));
        let user = &id["iterable_user"];
        if user.is_object() {
            let parts: Vec<String> = [("userId", &user["userId"]), ("email", &user["email"])]
                .into_iter()
                .filter_map(|(k, x)| x.as_str().map(|x| format!("{k} {x}")))
                .collect();
            rows.push(("Iterable user", parts.join(", ")));
        } else {
            rows.push((
                "Iterable user",
                "none (this key writes no Iterable user)".into(),
            ));
        }
        if let Some(keys) = id["linked_keys"].as_array() {
            rows.push(("Linked keys", join(keys)));
        }
    }
    let p = &c["profile"];
    if p.is_object() {
        let mut parts: Vec<String> = ["name", "phone", "state", "location"]
            .iter()
            .filter_map(|k| s(&p[*k]))
            .collect();
        parts.extend(s(&p["created_at"]).map(|t| format!("created {t}")));
        rows.push(("Profile", parts.join(" · ")));
    }
    let l = &c["lifetime"];
    if l.is_object() {
        rows.push((
            "Lifetime value",
            format!(
                "{} over {} (average {})",
                money(&l["lifetime_value"]),
                match l["orders"].as_u64() {
                    Some(1) => "1 order".to_owned(),
                    n => format!("{} orders", n.unwrap_or_default()),
                },
                money(&l["average_order_value"])
            ),
        ));
        let last = &l["last_order"];
        rows.push((
            "Last order",
            match (s(&last["id"]), s(&last["placed_at"])) {
                (Some(id), Some(at)) => format!("{id} placed {at}"),
                _ => "none".into(),
            },
        ));
        let mut tier = str_or(&l["tier"], "?");
        if let Some(a) = l["tiers_announced"].as_array() {
            let _ = write!(tier, " (upgrades announced: {})", join(a));
        }
        rows.push(("Tier", tier));
        rows.push((
            "Lapsed",
            match s(&l["lapsed_since"]) {
                Some(since) => format!("yes, since {since}"),
                None => "no".into(),
            },
        ));
        rows.push((
            "Recent refund",
            match (l["recent_refund"].as_bool(), s(&l["last_refund_at"])) {
                (Some(true), Some(at)) => format!("yes (refund at {at})"),
                (_, Some(at)) => format!("no (last refund {at})"),
                _ => "no".into(),
            },
        ));
    }
    let consent = &c["consent"];
    if consent.is_object() {
        for (label, ch) in [
            ("Email consent", &consent["email"]),
            ("SMS consent", &consent["sms"]),
        ] {
            let mut text = str_or(&ch["state"], "unknown");
            if ch["confirmed_opt_in"] == true {
                text.push_str(", confirmed opt-in");
            }
            if let Some(at) = s(&ch["updated_at"]) {
                let _ = write!(text, ", since {at}");
            }
            // Two-way consent: which side the effective state came from under the policy.
            if let Some(origin) = s(&ch["origin"]) {
                let _ = write!(text, ", from {origin}");
            }
            let _ = write!(
                text,
                " ({})",
                if ch["counts_as_consent"] == true {
                    "counts as consent"
                } else {
                    "no consent"
                }
            );
            rows.push((label, text));
        }
    }
    for k in c["checkouts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        rows.push((
            "Checkout",
            format!(
                "{} {} (updated {})",
                str_or(&k["id"], "(no id)"),
                str_or(&k["status"], "?"),
                str_or(&k["updated_at"], "?")
            ),
        ));
    }
    let link = &c["link"];
    if link.is_object() {
        rows.push((
            "Owner",
            format!(
                "{} ({} inputs parked)",
                str_or(&link["owner"], "unknown yet"),
                link["parked"]
            ),
        ));
    }
    if c.is_null() && !v["aggregate"].is_null() {
        rows.push(("Aggregate", v["aggregate"].to_string()));
    }
    let timers = v["timers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if timers.is_empty() {
        rows.push(("Timers", "none pending".into()));
    }
    for t in timers {
        rows.push((
            "Timer",
            format!(
                "{} due {} ({}): {}",
                str_or(&t["kind"], "?"),
                str_or(&t["due_at"], "?"),
                str_or(&t["due_in"], "?"),
                str_or(&t["effect"], "")
            ),
        ));
    }
    let d = &v["dedup"];
    rows.push((
        "Dedup window",
        format!(
            "{} deliveries remembered (at most {} per key, {} of event time)",
            d["remembered"],
            d["max_per_key"],
            str_or(&d["window"], "?")
        ),
    ));
    rows.push(("Updated", str_or(&v["updated_at"], "?")));
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(l, val)| format!("{l:<width$}  {val}\n"))
        .collect()
}

fn str_or(v: &Value, default: &str) -> String {
    v.as_str().unwrap_or(default).to_owned()
}

fn money(m: &Value) -> String {
    match (m["amount"].as_str(), m["currency"].as_str()) {
        (Some(a), Some(c)) => format!("{a} {c}"),
        (Some(a), None) => a.to_owned(),
        _ => "?".into(),
    }
}

fn join(items: &[Value]) -> String {
    items
        .iter()
        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Percent-encodes everything but unreserved characters and `@` (e-mail keys stay readable).
fn encode_segment(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_one_path_segment() {
        assert_eq!(
            super::encode_segment("demo.myshopify.com/e/a+b@x.com"),
            "demo.myshopify.com%2Fe%2Fa%2Bb@x.com"
        );
    }

    #[test]
    fn the_table_reads_in_business_terms() {
        let view = serde_json::json!({
            "key": "tour.myshopify.com/c/7001", "partition": 3, "owned_here": true,
            "customer": {
                "identity": {"kind": "customer", "customer_id": "7001", "email": "ada@example.com",
                             "iterable_user": {"userId": "7001", "email": "ada@example.com"},
                             "linked_keys": ["tour.myshopify.com/e/ada@example.com"]},
                "lifetime": {"lifetime_value": {"amount": "150.50", "currency": "EUR"}, "orders": 2,
                             "average_order_value": {"amount": "75.25", "currency": "EUR"},
                             "last_order": {"id": "12", "placed_at": "2025-12-05T00:00:00Z"},
                             "tier": "gold", "lapsed": false, "recent_refund": false},
                "consent": {"email": {"state": "subscribed", "counts_as_consent": true},
                            "sms": {"state": "unsubscribed", "origin": "iterable", "counts_as_consent": false,
                                    "updated_at": "2026-12-04T17:00:00Z"}}
            },
            "timers": [{"kind": "abandoned_checkout", "due_at": "2026-12-04T18:00:00Z",
                        "due_in": "in 42 min", "effect": "checkout_abandoned for the cart"}],
            "dedup": {"remembered": 5, "max_per_key": 32, "window": "7days"},
            "updated_at": "2026-12-04T17:18:00Z"
        });
        let t = super::table(&view);
        for want in [
            "150.50 EUR over 2 orders (average 75.25 EUR)",
            "Tier            gold",
            "Email consent   subscribed (counts as consent)",
            "SMS consent     unsubscribed, since 2026-12-04T17:00:00Z, from iterable (no consent)",
            "abandoned_checkout due 2026-12-04T18:00:00Z (in 42 min)",
            "5 deliveries remembered",
            "userId 7001, email ada@example.com",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }
}
