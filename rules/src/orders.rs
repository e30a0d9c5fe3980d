//! Orders: per-order facts, purchases (`trackPurchase`), first purchase, fulfilment, cancellation.
//!
//! Every `orders/*` payload is folded into one [`OrderFact`] per order id: the newest
//! `updated_at` supplies the mutable fields, and "was paid", "cancelled", "fulfilled" are sticky.
//! The purchase id is derived from the order only, so `orders/paid` and a later `orders/updated`
//! upsert one purchase in Iterable; it is re-sent only when its content (time, total, lines)
//! changed, never for a duplicate.

use schemas::{Action, CommerceItem, DataFields, KeyKind};
use serde_json::Value;

use crate::aggregate::{
    FinStatus, O_CANCEL_SENT, O_CANCELLED, O_COMPLETION_SENT, O_DELETED, O_FULFILL_SENT,
    O_FULFILLED, O_KNOWN, O_PAID, O_TEST, OrderFact, OrderVersion, PLACED_CREATED,
    PLACED_PROCESSED, State, keep_earliest,
};
use crate::emit::{Cx, Kind};
use crate::format::{self, text};
use crate::ids::{self, Hasher};
use crate::shopify::{Order, OrderDelete};
use crate::{checkout, first_purchase, items, ltv, messages, profile, refunds};

/// `orders/create|updated|paid|cancelled|fulfilled|partially_fulfilled|edited`.
pub(crate) fn on_order(cx: &mut Cx<'_>, state: &mut State, topic: &str, o: &Order) {
    let id = o.id.0;
    let ev = cx.ctx.event_time_ms;
    let updated = o.updated_at.or(o.created_at).map_or(ev, |t| t.0);
    let (placed_rank, placed) = match (o.processed_at, o.created_at) {
        (Some(p), _) => (PLACED_PROCESSED, p.0),
        (None, Some(c)) => (PLACED_CREATED, c.0),
        (None, None) => (0, ev),
    };

    if let Some(c) = &o.customer {
        profile::learn_customer(cx, state, c, updated);
    }
    profile::learn_currency(state, o.currency.as_deref());
    profile::guest_checkout_consent(cx, state, o.buyer_accepts_marketing, placed);

    let status = FinStatus::parse(o.financial_status.as_deref());
    let total = o.total_shop().unwrap_or_default();
    let items: Vec<CommerceItem> = o
        .line_items
        .iter()
        .map(|li| items::item(cx.cfg, li, true))
        .collect();
    let lines = lines_hash(&items);
    let fact = state.order_mut(id);
    let was = fact.clone();
    fact.flags |= O_KNOWN;
    if o.test == Some(true) {
        fact.flags |= O_TEST;
    }
    // Newest payload wins; two different payloads are never tied (the version includes their
    // content), so the winner is the same in any arrival order.
    let candidate: OrderVersion = (updated, status, total, o.total_presentment(), lines);
    let newest = !was.has(O_KNOWN) || candidate > fact.version();
    if newest {
        fact.updated_ms = updated;
        fact.status = status;
        fact.total = total;
        fact.presentment_total = o.total_presentment();
        fact.lines_hash = lines;
    }
    let placed_changed = fact.merge_placed(placed_rank, placed);
    if status.implies_paid() || topic == "orders/paid" {
        fact.flags |= O_PAID;
    }
    if let Some(c) = o.cancelled_at {
        fact.flags |= O_CANCELLED;
        keep_earliest(&mut fact.cancelled_ms, c.0);
    }
    if o.fulfillment_status.as_deref() == Some("fulfilled") || topic == "orders/fulfilled" {
        fact.flags |= O_FULFILLED;
    }
    let became_paid = !was.has(O_PAID) && fact.has(O_PAID);

    // Refunds embedded in newer payloads: merged by refund id with `refunds/create`.
    let currency = state.person.as_ref().and_then(|p| p.currency.clone());
    let mut new_refunds = Vec::new();
    for r in &o.refunds {
        if let Some(f) = refunds::fact(r, currency.as_deref(), updated)
            && refunds::insert(state.order_mut(id), f.clone())
        {
            new_refunds.push((f, r.note.clone()));
        }
    }

    // Cross-key protocol: tell the order key who owns it, and the email key about completion.
    let contact = o.contact().map(str::to_lowercase);
    // The link's time is the order's creation, which every payload of the order agrees on.
    if profile::is_person(cx.key) {
        messages::link_order(cx, state, id, o.created_at.map_or(placed, |t| t.0));
    }
    if let Some(email) = contact.as_deref() {
        let fact = state.order_mut(id);
        if !fact.has(O_COMPLETION_SENT)
            && (cx.key.kind() == KeyKind::Customer || cx.key.id() != email)
        {
            fact.flags |= O_COMPLETION_SENT;
            messages::send_completion(cx, email, id, o.checkout_token.as_deref(), placed);
        }
    }
    if let Some(token) = text(o.checkout_token.as_deref()) {
        checkout::complete(cx, state, ids::token_hash(token), placed);
    }

    let fact = state.order_mut(id).clone();

    // Purchase: once paid, and again only when its content changes. Its lines come from this
    // payload, so an older payload only re-sends it when it carries the newest lines.
    let lines_current = lines == fact.lines_hash || fact.purchase_hash == 0;
    if ltv::purchasable(&fact) && (newest || ((became_paid || placed_changed) && lines_current)) {
        let h = purchase_hash(&fact, &items);
        if h != fact.purchase_hash {
            state.order_mut(id).purchase_hash = h;
            if cx.fresh(Kind::Purchase, fact.placed_ms) {
                let fields = purchase_fields(o, &fact);
                cx.command(
                    ids::command_id(cx.shop(), "purchase", &[&id.to_string()]),
                    fact.placed_ms,
                    Action::TrackPurchase {
                        created_at_s: format::seconds(fact.placed_ms),
                        total: format::cents(fact.total),
                        items,
                        data_fields: fields,
                    },
                );
            }
        }
    }

    // First purchase: waits for its facts (see `first_purchase`).
    first_purchase::on_order(cx, state, &fact, newest, placed_changed, || {
        let mut f = order_fields(o, &fact);
        f.insert(
            "item_count".into(),
            Value::from(
                o.line_items
                    .iter()
                    .map(|l| l.quantity.unwrap_or(1))
                    .sum::<i64>(),
            ),
        );
        f.insert(
            "item_names".into(),
            Value::Array(
                o.line_items
                    .iter()
                    .map(|l| Value::String(items::item_name(l)))
                    .collect(),
            ),
        );
        f
    });

    // Fulfilment, once per order.
    if fact.has(O_FULFILLED)
        && !fact.has(O_FULFILL_SENT)
        && !fact.has(O_TEST)
        && !fact.has(O_DELETED)
        && !fact.has(O_CANCELLED)
    {
        state.order_mut(id).flags |= O_FULFILL_SENT;
        let at = o
            .fulfillments
            .iter()
            .filter_map(|f| f.created_at)
            .map(|t| t.0)
            .max()
            .unwrap_or(updated);
        let mut f = order_fields(o, &fact);
        f.insert("fulfilled_at".into(), format::date(at));
        let strings = |g: fn(&crate::shopify::Fulfillment) -> Option<&str>| {
            Value::Array(
                o.fulfillments
                    .iter()
                    .filter_map(g)
                    .filter_map(|s| text(Some(s)))
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            )
        };
        f.insert(
            "tracking_numbers".into(),
            strings(|f| f.tracking_number.as_deref()),
        );
        f.insert(
            "tracking_urls".into(),
            strings(|f| f.tracking_url.as_deref()),
        );
        if let Some(c) = o
            .fulfillments
            .iter()
            .find_map(|f| text(f.tracking_company.as_deref()))
        {
            f.insert("tracking_company".into(), Value::String(c.to_owned()));
        }
        if let Some(u) = text(o.order_status_url.as_deref()) {
            f.insert("order_status_url".into(), Value::String(u.to_owned()));
        }
        let name = cx.cfg.events.order_fulfilled.clone();
        let idv = ids::command_id(cx.shop(), "order-fulfilled", &[&id.to_string()]);
        cx.event(Kind::OrderFulfilled, &name, idv, at, f);
    }

    for (r, note) in new_refunds {
        refunds::announce(cx, state, id, &r, note.as_deref(), Some(o));
    }
    cancelled(cx, state, id, Some(o), o.cancel_reason.as_deref());
}

/// `order_cancelled`, once per order, with amounts.
pub(crate) fn cancelled(
    cx: &mut Cx<'_>,
    state: &mut State,
    id: u64,
    o: Option<&Order>,
    reason: Option<&str>,
) {
    let Ok(i) = state.orders.binary_search_by_key(&id, |o| o.id) else {
        return;
    };
    let Some(fact) = state.orders.get_mut(i) else {
        return;
    };
    if !fact.has(O_CANCELLED) || fact.has(O_CANCEL_SENT) || fact.has(O_TEST) || fact.has(O_DELETED)
    {
        return;
    }
    fact.flags |= O_CANCEL_SENT;
    let fact = fact.clone();
    let at = fact.cancelled_ms.unwrap_or(cx.ctx.event_time_ms);
    let mut f = match o {
        Some(o) => order_fields(o, &fact),
        None => ltv::fact_fields(&fact),
    };
    if let Some(r) = text(reason) {
        f.insert("cancel_reason".into(), Value::String(r.to_owned()));
    }
    f.insert("cancelled_at".into(), format::date(at));
    f.insert("refunded".into(), format::money(ltv::refunded(&fact)));
    f.insert("kept".into(), format::money(ltv::kept(&fact)));
    f.insert(
        "financial_status".into(),
        Value::String(fact.status.as_str().into()),
    );
    let name = cx.cfg.events.order_cancelled.clone();
    let idv = ids::command_id(cx.shop(), "order-cancelled", &[&id.to_string()]);
    cx.event(Kind::OrderCancelled, &name, idv, at, f);
}

/// `orders/delete` (forwarded by the order key): the order leaves every figure from the
/// deletion on (its event time); what it did before (a first purchase, a tier reached) stands,
/// so the outcome does not depend on whether a timer fired before the deletion arrived.
pub(crate) fn on_delete(cx: &mut Cx<'_>, state: &mut State, d: &OrderDelete) {
    let at = cx.ctx.event_time_ms;
    let fact = state.order_mut(d.id.0);
    fact.flags |= O_DELETED;
    keep_earliest(&mut fact.deleted_ms, at);
}

/// Fields shared by order events.
fn order_fields(o: &Order, fact: &OrderFact) -> DataFields {
    let mut f = ltv::fact_fields(fact);
    if let Some(n) = text(o.name.as_deref()) {
        f.insert("order_name".into(), Value::String(n.to_owned()));
    }
    if let Some(c) = text(o.currency.as_deref()) {
        f.insert("currency".into(), Value::String(c.to_owned()));
    }
    f
}

fn purchase_fields(o: &Order, fact: &OrderFact) -> DataFields {
    let mut f = order_fields(o, fact);
    if let Some(n) = o.order_number {
        f.insert("order_number".into(), Value::from(n));
    }
    if let (Some(p), Some(t)) = (
        text(o.presentment_currency.as_deref()),
        fact.presentment_total,
    ) {
        f.insert("presentment_currency".into(), Value::String(p.to_owned()));
        f.insert("presentment_total".into(), format::money(t));
    }
    let shop = |s: &Option<crate::shopify::MoneySet>| s.as_ref().and_then(|m| m.shop());
    for (name, v) in [
        ("subtotal", shop(&o.subtotal_price_set)),
        ("discounts", shop(&o.total_discounts_set)),
        ("tax", shop(&o.total_tax_set)),
        ("shipping", shop(&o.total_shipping_price_set)),
    ] {
        if let Some(v) = v {
            f.insert(name.into(), format::money(v));
        }
    }
    let codes: Vec<Value> = o
        .discount_codes
        .iter()
        .filter_map(|d| text(d.code.as_deref()))
        .map(|c| Value::String(c.to_owned()))
        .collect();
    if !codes.is_empty() {
        f.insert("discount_codes".into(), Value::Array(codes));
    }
    if let Some(s) = text(o.source_name.as_deref()) {
        f.insert("source_name".into(), Value::String(s.to_owned()));
    }
    f
}

/// Hash of an order's lines (what a purchase lists).
fn lines_hash(items: &[CommerceItem]) -> u64 {
    let mut h = Hasher::new();
    for i in items {
        h.add(&i.id)
            .add(&i.name)
            .add(&i.price.normalize().to_string())
            .add(&i.quantity.to_string());
    }
    h.finish()
}

fn purchase_hash(fact: &OrderFact, items: &[CommerceItem]) -> u64 {
    let mut h = Hasher::new();
    h.add(&fact.placed_ms.to_string())
        .add(&fact.total.normalize().to_string())
        .add(&lines_hash(items).to_string());
    h.finish()
}
