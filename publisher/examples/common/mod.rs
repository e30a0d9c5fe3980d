//! Command builders shared by the publisher's benchmarks (one distinct customer per `user`).

use rust_decimal::Decimal;
use schemas::command::{Action, CommerceItem, DataFields, IterableCommand, UserRef};

/// A command of customer `user` (userId `u{user}`), event time now.
pub(crate) fn command(id: String, user: usize, action: Action) -> IterableCommand {
    IterableCommand {
        command_id: id,
        shop_domain: "bench.myshopify.com".into(),
        customer_key: format!("bench.myshopify.com/{user}"),
        user: UserRef {
            user_id: Some(format!("u{user}")),
            email: Some(format!("u{user}@example.com")),
        },
        event_time_ms: runtime::now_ms(),
        source_ids: vec![],
        action,
    }
}

/// A JSON object as `dataFields` (anything else: empty).
pub(crate) fn fields(v: serde_json::Value) -> DataFields {
    match v {
        serde_json::Value::Object(m) => m,
        _ => DataFields::new(),
    }
}

/// A one-piece cart or order line with id `id`.
pub(crate) fn item(id: String) -> CommerceItem {
    CommerceItem {
        id,
        sku: None,
        name: "Mug".into(),
        price: Decimal::new(1250, 2),
        quantity: 1,
        categories: vec![],
        url: None,
        image_url: None,
        data_fields: None,
    }
}
