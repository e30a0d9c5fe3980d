//! Minimal JSON writer that reproduces Shopify's byte-level quirks.
//!
//! Shopify serialises with Ruby's `to_json`, which escapes `/` as `\/` and `&`, `<`, `>`
//! as `\u0026`, `\u003c`, `\u003e`, keeps key order, and writes some amounts as bare
//! numbers (`89.99`, `0.0`). `serde_json` does none of that, so payloads are built as a
//! [`J`] tree and written here; the resulting bytes are what gets signed and sent.

/// A JSON value with insertion-ordered objects and pre-formatted numbers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum J {
    Null,
    Bool(bool),
    /// Unsigned integer (ids); written exactly, never through `f64`.
    U(u64),
    /// Signed integer.
    I(i64),
    /// A number already formatted as JSON text (e.g. `89.99`, `0.0`).
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(&'static str, J)>),
}

impl J {
    /// Serialise to compact JSON bytes with Shopify's escapes.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(1024);
        self.write(&mut out);
        out.into_bytes()
    }

    fn write(&self, out: &mut String) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::U(n) => out.push_str(&n.to_string()),
            J::I(n) => out.push_str(&n.to_string()),
            J::Num(s) => out.push_str(s),
            J::Str(s) => escape_into(s, out),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            J::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    escape_into(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

fn escape_into(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            '&' => out.push_str("\\u0026"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            // Non-ASCII stays raw UTF-8, as Ruby's generator does by default.
            c => out.push(c),
        }
    }
    out.push('"');
}

impl From<&str> for J {
    fn from(s: &str) -> Self {
        J::Str(s.to_owned())
    }
}
impl From<String> for J {
    fn from(s: String) -> Self {
        J::Str(s)
    }
}
impl From<&String> for J {
    fn from(s: &String) -> Self {
        J::Str(s.clone())
    }
}
impl From<u64> for J {
    fn from(n: u64) -> Self {
        J::U(n)
    }
}
impl From<u32> for J {
    fn from(n: u32) -> Self {
        J::U(u64::from(n))
    }
}
impl From<i64> for J {
    fn from(n: i64) -> Self {
        J::I(n)
    }
}
impl From<bool> for J {
    fn from(b: bool) -> Self {
        J::Bool(b)
    }
}
impl<T: Into<J>> From<Option<T>> for J {
    fn from(o: Option<T>) -> Self {
        match o {
            Some(v) => v.into(),
            None => J::Null,
        }
    }
}
impl From<Vec<J>> for J {
    fn from(v: Vec<J>) -> Self {
        J::Arr(v)
    }
}

/// Build an object from `key => value` pairs, converting values with `Into<J>`.
macro_rules! obj {
    ($($k:literal => $v:expr),* $(,)?) => {
        $crate::json::J::Obj(vec![$(($k, $crate::json::J::from($v))),*])
    };
}
pub(crate) use obj;

#[cfg(test)]
mod tests {

    #[test]
    fn escapes_like_shopify() {
        let j = obj! {"url" => "https://x.io/a?b=1&c=<2>", "id" => 820_982_911_946_154_508u64};
        let s = String::from_utf8(j.to_bytes()).unwrap();
        assert_eq!(
            s,
            r#"{"url":"https:\/\/x.io\/a?b=1\u0026c=\u003c2\u003e","id":820982911946154508}"#
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["url"], "https://x.io/a?b=1&c=<2>");
        assert_eq!(v["id"].as_u64(), Some(820_982_911_946_154_508));
    }
}
