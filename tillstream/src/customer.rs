//! `tillstream customer <key>`: asks any processor, follows the answer to the owner.

use anyhow::{Context, bail};

/// Prints the customer's state as pretty JSON.
pub(crate) async fn show(processor: &str, key: &str, shop: Option<&str>) -> anyhow::Result<()> {
    let key = match (shop, key.contains('/')) {
        (Some(shop), false) => format!("{shop}/c/{key}"),
        _ => key.to_owned(),
    };
    let client = reqwest::Client::new();
    let mut base = processor.trim_end_matches('/').to_owned();
    for _ in 0..3 {
        // Keys contain slashes (`{shop}/c/{id}`): one path segment, so percent-encoded.
        let url = format!("{base}/customers/{}", encode_segment(&key));
        let resp = client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        match status.as_u16() {
            200 | 404 => {
                println!("{}", serde_json::to_string_pretty(&body)?);
                return Ok(());
            }
            // 421: another instance owns the partition; its advertised URL is the owner.
            421 => match body.get("owner").and_then(|o| o.as_str()) {
                Some(owner) if owner.starts_with("http") => {
                    base = owner.trim_end_matches('/').to_owned()
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
}
