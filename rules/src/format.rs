//! Iterable value formats: dates as `yyyy-MM-dd HH:mm:ss +00:00`, money as 2-dp JSON numbers.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Timelike};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Number, Value};

/// A Unix-ms instant in the date format Iterable types as `date` (UTC).
pub fn date(ms: i64) -> Value {
    let Some(t) = DateTime::from_timestamp_millis(ms) else {
        return Value::Null;
    };
    if !(0..=9999).contains(&t.year()) {
        return Value::String(t.format("%Y-%m-%d %H:%M:%S +00:00").to_string());
    }
    // Written out directly: chrono's `format` parses its pattern on every call, and every
    // profile update formats several dates.
    Value::String(format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} +00:00",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

/// Rounds money to cents, half away from zero (how shops round).
pub fn cents(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// Money as a JSON number with at most 2 decimals. The math stays in `Decimal`; only the final
/// value becomes a double, whose shortest text is exactly the 2-dp decimal.
pub fn money(d: Decimal) -> Value {
    let text = cents(d).normalize().to_string();
    f64::from_str(&text)
        .ok()
        .and_then(Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// Unix ms to Unix seconds (Iterable's `createdAt`), flooring.
pub fn seconds(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// A non-empty trimmed string.
pub fn text(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_chrono_writes_them() {
        let chrono_date = |ms: i64| {
            DateTime::from_timestamp_millis(ms)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S +00:00").to_string())
        };
        let mut ms = -62_200_000_000_000_i64; // year 0, then steps of ~29 days past 9999
        while ms < 260_000_000_000_000 {
            assert_eq!(
                date(ms).as_str().map(str::to_owned),
                chrono_date(ms),
                "{ms}"
            );
            ms += 2_500_000_000_007;
        }
        for ms in [
            0,
            -1,
            999,
            1_767_225_599_999,
            1_767_225_600_000,
            253_402_300_799_999,
            253_402_300_800_000,
            -62_167_219_200_001,
        ] {
            assert_eq!(
                date(ms).as_str().map(str::to_owned),
                chrono_date(ms),
                "{ms}"
            );
        }
    }

    #[test]
    fn formats() {
        assert_eq!(
            date(1_640_995_200_000),
            Value::String("2022-01-01 00:00:00 +00:00".into())
        );
        assert_eq!(money(Decimal::new(123_456, 3)).to_string(), "123.46");
        assert_eq!(money(Decimal::new(10_000, 2)).to_string(), "100.0");
        assert_eq!(money(Decimal::new(1999, 2)).to_string(), "19.99");
        assert_eq!(seconds(-1), -1);
    }
}
