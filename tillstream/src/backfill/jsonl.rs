//! Bulk JSONL reassembly: child lines are attached to their parent by `__parentId`, in
//! whatever order the file lists them (recent API versions do not group children).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The objects of one file, children nested under their parents.
#[derive(Debug, Default)]
pub(crate) struct Assembled {
    /// Root objects, sorted by id so a resumed run sees them in the same order.
    pub(crate) roots: Vec<Value>,
    /// Child lines attached to a parent.
    pub(crate) children: usize,
    /// Child lines whose parent is not in the file (partial data).
    pub(crate) orphans: usize,
    /// Lines that are not JSON objects.
    pub(crate) bad_lines: usize,
}

/// The connection field a child is listed under on its parent: `gid://shopify/LineItem/1` →
/// `lineItems` (lower camel case, plural).
fn field_for(child_id: &str) -> String {
    let kind = child_id
        .strip_prefix("gid://shopify/")
        .and_then(|r| r.split('/').next())
        .unwrap_or("children");
    let mut out = String::with_capacity(kind.len() + 1);
    let mut chars = kind.chars();
    if let Some(c) = chars.next() {
        out.extend(c.to_lowercase());
    }
    out.extend(chars);
    out.push('s');
    out
}

fn id_of(v: &Map<String, Value>) -> Option<&str> {
    v.get("id").and_then(Value::as_str)
}

/// Sort key: the numeric tail of the gid when there is one, so ids compare as numbers.
fn sort_key(v: &Value) -> (u64, String) {
    v.as_object().map(map_key).unwrap_or_default()
}

fn map_key(v: &Map<String, Value>) -> (u64, String) {
    let id = id_of(v).unwrap_or_default();
    let n = id
        .rsplit('/')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(u64::MAX);
    (n, id.to_owned())
}

/// Parses and reassembles a JSONL file (children nested up to the two levels Shopify allows).
pub(crate) fn assemble(text: &str) -> Assembled {
    let mut out = Assembled::default();
    let mut roots: Vec<Map<String, Value>> = Vec::new();
    let mut by_parent: BTreeMap<String, Vec<Map<String, Value>>> = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(mut obj)) => match obj.remove("__parentId") {
                Some(Value::String(parent)) => by_parent.entry(parent).or_default().push(obj),
                Some(_) => out.bad_lines += 1,
                None => roots.push(obj),
            },
            _ => out.bad_lines += 1,
        }
    }
    fn attach(
        obj: &mut Map<String, Value>,
        by_parent: &mut BTreeMap<String, Vec<Map<String, Value>>>,
        depth: u8,
        count: &mut usize,
    ) {
        let Some(id) = id_of(obj).map(str::to_owned) else {
            return;
        };
        let Some(mut kids) = by_parent.remove(&id) else {
            return;
        };
        kids.sort_by_key(map_key);
        let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for mut k in kids {
            if depth < 2 {
                attach(&mut k, by_parent, depth + 1, count);
            }
            *count += 1;
            let field = field_for(id_of(&k).unwrap_or_default());
            groups.entry(field).or_default().push(Value::Object(k));
        }
        for (field, list) in groups {
            obj.insert(field, Value::Array(list));
        }
    }
    for root in &mut roots {
        attach(root, &mut by_parent, 1, &mut out.children);
    }
    out.orphans = by_parent.values().map(Vec::len).sum();
    out.roots = roots.into_iter().map(Value::Object).collect();
    out.roots.sort_by_key(sort_key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_before_parents_orphans_and_garbage() {
        let text = r##"{"id":"gid://shopify/LineItem/2","quantity":1,"__parentId":"gid://shopify/Order/10"}
{"id":"gid://shopify/LineItem/9","__parentId":"gid://shopify/Order/404"}
not json
{"id":"gid://shopify/Order/10","name":"#1001"}
{"id":"gid://shopify/LineItem/1","quantity":2,"__parentId":"gid://shopify/Order/10"}
[1,2]
{"id":"gid://shopify/Order/9","name":"#1000"}
"##;
        let a = assemble(text);
        assert_eq!(
            (a.roots.len(), a.children, a.orphans, a.bad_lines),
            (2, 2, 1, 2)
        );
        assert_eq!(a.roots[0]["id"], "gid://shopify/Order/9");
        let lines = a.roots[1]["lineItems"].as_array().unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["id"], "gid://shopify/LineItem/1");
        assert!(lines[0].get("__parentId").is_none());
        assert_eq!(
            field_for("gid://shopify/ProductVariant/1"),
            "productVariants"
        );
    }
}
