//! What the soak's samples and the outcome check add up to: mismatch classes, memory growth.

use serde_json::{Value, json};

/// The class of a [`check_outcome`] mismatch line: `duplicated` (a trigger or record more
/// often than expected), `lost` (something expected missing or short), `unwanted` (a trigger
/// that must not fire, or for another person; a redacted person still present),
/// `rate_limited` (429s, reported apart), `wrong` (a value that differs: tier, first purchase
/// for another order).
pub(crate) fn classify(m: &str) -> &'static str {
    let (kind, rest) = m.split_once(':').unwrap_or((m, ""));
    let words: Vec<&str> = rest.split_whitespace().collect();
    // "{key} {n} customer_lapsed ..., expected {m} ..." (the key has no spaces).
    let counts = |name: &str| -> Option<(i64, i64)> {
        let at = words.iter().position(|w| w.trim_end_matches(',') == name)?;
        let got = words.get(at.checked_sub(1)?)?.parse().ok()?;
        let exp = words.iter().skip(at).position(|w| *w == "expected")? + at + 1;
        let want = words
            .get(exp)?
            .trim_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .ok()?;
        Some((got, want))
    };
    let more_or_less = |c: Option<(i64, i64)>| match c {
        Some((got, want)) if got > want => "duplicated",
        _ => "lost",
    };
    match kind {
        "duplicate" => "duplicated",
        "429" => "rate_limited",
        "lapse" => more_or_less(counts("customer_lapsed")),
        "reactivation" => more_or_less(counts("customer_reactivated")),
        "first-purchase" => match words.get(1).and_then(|w| w.parse::<i64>().ok()) {
            Some(n) if n > 1 => "duplicated",
            Some(0) => "lost",
            _ => "wrong",
        },
        "tier-upgrade" => {
            // "{key} vip_tier_upgraded [..], expected {..}": compare the quoted names.
            let (got, want) = rest.split_once(", expected").unwrap_or((rest, ""));
            let quoted = |s: &str| s.matches('"').count() / 2;
            if quoted(got) > quoted(want) {
                "duplicated"
            } else {
                "lost"
            }
        }
        "checkout-unwanted" | "checkout-user" | "redact" => "unwanted",
        "tier" => "wrong",
        // profile, ltv, orders-count, checkout-missing: an expected write is missing.
        _ => "lost",
    }
}

/// Least-squares slope of each process's RSS (MiB per hour) after the first 10 % of the run:
/// over the whole run (`all`, restarts included) and over its longest-lived process
/// (`longest_process`, one pid; its own first 10 % skipped), which a kill -9 does not reset.
pub(crate) fn memory_growth(samples: &[Value], run_s: f64) -> Value {
    let mut names: Vec<String> = samples
        .iter()
        .filter_map(|s| s["rss_mib"].as_object())
        .flat_map(|m| m.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    let mut out = serde_json::Map::new();
    for name in names {
        let points: Vec<(f64, f64, Option<u64>)> = samples
            .iter()
            .filter_map(|s| {
                Some((
                    s["t_s"].as_f64()?,
                    s["rss_mib"][&name].as_f64().filter(|v| *v > 0.0)?,
                    s["pids"][&name].as_u64(),
                ))
            })
            .collect();
        let after: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.0 >= run_s * 0.1)
            .map(|p| (p.0, p.1))
            .collect();
        let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut last_pid = None;
        for (t, v, pid) in &points {
            if runs.is_empty() || *pid != last_pid {
                runs.push(Vec::new());
                last_pid = *pid;
            }
            if let Some(r) = runs.last_mut() {
                r.push((*t, *v));
            }
        }
        let longest = runs
            .into_iter()
            .max_by(|a, b| span(a).total_cmp(&span(b)))
            .unwrap_or_default();
        let skip = span(&longest) * 0.1;
        let t0 = longest.first().map_or(0.0, |p| p.0);
        let steady: Vec<(f64, f64)> = longest
            .iter()
            .copied()
            .filter(|p| p.0 >= t0 + skip)
            .collect();
        out.insert(
            name,
            json!({
                "all": slope_per_hour(&after).map(round1),
                "longest_process": slope_per_hour(&steady).map(round1),
                "longest_process_span_s": round1(span(&longest)),
                "first_mib": points.first().map(|p| p.1),
                "last_mib": points.last().map(|p| p.1),
                "max_mib": points.iter().map(|p| p.1).fold(0.0, f64::max),
            }),
        );
    }
    Value::Object(out)
}

fn span(points: &[(f64, f64)]) -> f64 {
    match (points.first(), points.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0.0,
    }
}

/// Least-squares slope of (seconds, MiB) points, in MiB per hour; None below three points.
fn slope_per_hour(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mv = points.iter().map(|p| p.1).sum::<f64>() / n;
    let cov: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - mv)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
    (var > 0.0).then(|| cov / var * 3600.0)
}

pub(crate) fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

pub(crate) fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod unit {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mismatch_lines_are_classed_by_direction() {
        let c = classify;
        assert_eq!(
            c("lapse: 42 2 customer_lapsed (at [1, 2]), expected 1 (due [1])"),
            "duplicated"
        );
        assert_eq!(
            c("lapse: 42 0 customer_lapsed (at []), expected 1 (due [1])"),
            "lost"
        );
        assert_eq!(
            c("reactivation: 42 3 customer_reactivated, expected 2 ([])"),
            "duplicated"
        );
        assert_eq!(
            c(
                "first-purchase: 42 2 first_purchase events (orders [\"1\", \"2\"]), expected Some(1)"
            ),
            "duplicated"
        );
        assert_eq!(
            c("first-purchase: 42 0 first_purchase events (orders []), expected Some(1)"),
            "lost"
        );
        assert_eq!(
            c("first-purchase: 42 first_purchase for order 2, expected 1"),
            "wrong"
        );
        assert_eq!(
            c("tier-upgrade: 42 vip_tier_upgraded [\"silver\", \"silver\"], expected {\"silver\"}"),
            "duplicated"
        );
        assert_eq!(
            c("tier-upgrade: 42 vip_tier_upgraded [], expected {\"silver\"}"),
            "lost"
        );
        assert_eq!(c("duplicate: event x y has 2 occurrences"), "duplicated");
        assert_eq!(
            c("checkout-missing: 42 checkout t due d did not fire"),
            "lost"
        );
        assert_eq!(
            c("tier: 42 silver in Iterable, expected gold (peak ltv 1.00, final 1.00)"),
            "wrong"
        );
        assert_eq!(
            c("checkout-unwanted: 42 checkout t due d fired but must not (Some(Completed))"),
            "unwanted"
        );
        assert_eq!(
            c("429: iterable-sim answered 3 requests with 429"),
            "rate_limited"
        );
    }

    #[test]
    fn memory_slope_is_per_hour_and_follows_the_longest_process() {
        let pts: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i) * 360.0, 100.0 + f64::from(i)))
            .collect();
        assert!((slope_per_hour(&pts).unwrap() - 10.0).abs() < 1e-9);
        let samples: Vec<Value> = (0..20)
            .map(|i| {
                let pid = if i < 5 { 1 } else { 2 };
                json!({"t_s": f64::from(i) * 60.0, "rss_mib": {"p": 50 + i}, "pids": {"p": pid}})
            })
            .collect();
        let m = memory_growth(&samples, 1200.0);
        assert_eq!(m["p"]["longest_process_span_s"], json!(840.0));
        assert_eq!(m["p"]["longest_process"], json!(60.0));
    }
}
