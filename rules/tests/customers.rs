//! Table tests of profiles, consent, identity, GDPR, replays and ids, through the in-memory engine.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use rules::config::{IdentityMode, RulesConfig};
use rules::{Ctx, MarketingRules, RuleError, Rules, State};
use schemas::{Action, CustomerKey, DeleteMode, KeyKind};
use serde_json::json;

#[test]
fn profile_fields_from_both_customer_shapes() {
    let mut h = Harness::default();
    h.deliver(legacy(envelope(
        "customers/create",
        &customer_json(C, EMAIL, T0, T0, true),
        "legacy",
        T0,
    )));
    let p = h.profile(&ckey());
    assert_eq!(p["firstName"], json!("Chloé"));
    assert_eq!(p["lastName"], json!("O'Brien"));
    assert_eq!(p["phoneNumber"], json!("+16135550123"));
    assert_eq!(p["shopify_customer_state"], json!("enabled"));
    assert_eq!(p["shopify_city"], json!("Ottawa"));
    assert_eq!(p["shopify_province_code"], json!("ON"));
    assert_eq!(p["shopify_country_code"], json!("CA"));
    assert_eq!(p["shopify_zip"], json!("K1A 0B1"));
    assert_eq!(p["shopify_created_at"], json!("2026-01-05 14:00:00 +00:00"));
    assert_eq!(p["shopify_tags"], json!(["newsletter", "vip"]));
    assert_eq!(p["shopify_email_consent"], json!("subscribed"));
    assert_eq!(p["shopify_sms_consent"], json!("not_subscribed"));
    assert_eq!(p["shopify_customer_id"], json!(C.to_string()));
    // A 2025-01+ update has no tags or consent: they are unknown, not removed.
    let mut modern = customer_json(C, EMAIL, T0, T0 + HOUR, false);
    modern["state"] = json!("disabled");
    h.deliver(envelope("customers/disable", &modern, "modern", T0 + HOUR));
    let p = h.profile(&ckey());
    assert_eq!(p["shopify_customer_state"], json!("disabled"));
    assert_eq!(p["shopify_tags"], json!(["newsletter", "vip"]));
    assert_eq!(p["shopify_email_consent"], json!("subscribed"));
    // A stale update (older updated_at) is ignored.
    let mut stale = customer_json(C, EMAIL, T0, T0 + MIN, false);
    stale["first_name"] = json!("Old");
    let before = h.commands.len();
    h.deliver(envelope("customers/update", &stale, "stale", T0 + 2 * HOUR));
    assert_eq!(h.commands.len(), before);
}

#[test]
fn consent_maps_to_lists_and_channels_and_never_subscribes_without_it() {
    let mut cfg = RulesConfig::default();
    cfg.consent.email_list_ids = vec![11];
    cfg.consent.sms_list_ids = vec![12];
    cfg.consent.email_channel_id = Some(21);
    cfg.consent.sms_channel_id = Some(22);
    let mut h = Harness::new(cfg);
    customer_created(&mut h);
    let subs = |h: &Harness| -> Vec<(i64, bool)> {
        h.commands
            .iter()
            .filter_map(|c| match c.action {
                Action::ListMembership { list_id, subscribe } => Some((list_id, subscribe)),
                _ => None,
            })
            .collect()
    };
    let channels = |h: &Harness| -> Vec<Vec<i64>> {
        h.commands
            .iter()
            .filter_map(|c| match &c.action {
                Action::UpdateSubscriptions(s) => s.unsubscribed_channel_ids.clone(),
                _ => None,
            })
            .collect()
    };
    assert!(subs(&h).is_empty(), "unknown consent subscribes nobody");
    assert_eq!(channels(&h), vec![vec![21, 22]]);
    h.deliver(envelope(
        "customers_email_marketing_consent/update",
        &email_consent_json(C, EMAIL, "pending", T0 + MIN),
        "p",
        T0 + MIN,
    ));
    assert!(subs(&h).is_empty(), "pending is not consent");
    h.deliver(envelope(
        "customers_email_marketing_consent/update",
        &email_consent_json(C, EMAIL, "subscribed", T0 + 2 * MIN),
        "s",
        T0 + 2 * MIN,
    ));
    h.deliver(envelope(
        "customers_marketing_consent/update",
        &sms_consent_json(C, "subscribed", T0 + 3 * MIN),
        "sms",
        T0 + 3 * MIN,
    ));
    assert_eq!(subs(&h), vec![(11, true), (12, true)]);
    assert_eq!(channels(&h).last().unwrap(), &Vec::<i64>::new());
    // Consent withdrawn.
    h.deliver(envelope(
        "customers_email_marketing_consent/update",
        &email_consent_json(C, EMAIL, "unsubscribed", T0 + 4 * MIN),
        "u",
        T0 + 4 * MIN,
    ));
    assert_eq!(subs(&h).last(), Some(&(11, false)));
    assert_eq!(channels(&h).last().unwrap(), &vec![21]);
    assert_eq!(
        h.profile(&ckey())["shopify_email_consent"],
        json!("unsubscribed")
    );
    // An older "subscribed" arriving late does not resubscribe.
    let n = h.commands.len();
    h.deliver(envelope(
        "customers_email_marketing_consent/update",
        &email_consent_json(C, EMAIL, "subscribed", T0 + 2 * MIN + 1),
        "late",
        T0 + 5 * MIN,
    ));
    assert_eq!(h.commands.len(), n);
}

#[test]
fn identity_modes() {
    let mk = |mode| {
        let mut cfg = RulesConfig::default();
        cfg.identity.mode = mode;
        Harness::new(cfg)
    };
    // Hybrid: userId + email; guests by email; email change through the userId.
    let mut h = mk(IdentityMode::Hybrid);
    customer_created(&mut h);
    assert_eq!(
        h.commands[0].user.user_id.as_deref(),
        Some(C.to_string().as_str())
    );
    assert_eq!(h.commands[0].user.email.as_deref(), Some(EMAIL));
    h.deliver(envelope(
        "customers/update",
        &customer_json(C, "new@example.com", T0, T0 + DAY, false),
        "cu",
        T0 + DAY,
    ));
    let change: Vec<_> = h
        .commands
        .iter()
        .filter(|c| matches!(c.action, Action::ChangeEmail { .. }))
        .collect();
    assert_eq!(change.len(), 1);
    assert_eq!(
        change[0].action,
        Action::ChangeEmail {
            current_email: None,
            current_user_id: Some(C.to_string()),
            new_email: "new@example.com".into()
        }
    );
    paid(&mut h, 1200, T0 + 2 * DAY, "10.00");
    assert_eq!(
        h.commands.last().unwrap().user.email.as_deref(),
        Some("new@example.com")
    );
    assert_eq!(
        h.commands.last().unwrap().user.user_id.as_deref(),
        Some(C.to_string().as_str())
    );

    // Email mode: updateEmail from the old address.
    let mut h = mk(IdentityMode::Email);
    customer_created(&mut h);
    h.deliver(envelope(
        "customers/update",
        &customer_json(C, "new@example.com", T0, T0 + DAY, false),
        "cu",
        T0 + DAY,
    ));
    let change = h
        .commands
        .iter()
        .find(|c| matches!(c.action, Action::ChangeEmail { .. }))
        .unwrap();
    assert_eq!(change.user.email.as_deref(), Some(EMAIL));
    assert_eq!(
        change.action,
        Action::ChangeEmail {
            current_email: Some(EMAIL.into()),
            current_user_id: None,
            new_email: "new@example.com".into()
        }
    );
    // Email mode, customer known only by id: nothing until the email is known, then everything.
    let mut h = mk(IdentityMode::Email);
    h.deliver(envelope(
        "customers_marketing_consent/update",
        &sms_consent_json(C, "subscribed", T0),
        "sms",
        T0,
    ));
    assert!(h.commands.is_empty());
    h.deliver(envelope(
        "customers/update",
        &customer_json(C, EMAIL, T0, T0 + MIN, false),
        "cu",
        T0 + MIN,
    ));
    let p = h.profile(&ckey());
    assert_eq!(p["shopify_sms_consent"], json!("subscribed"));
    assert_eq!(p["firstName"], json!("Chloé"));

    // userId mode: guests are skipped by default, customers carry email as a field.
    let mut h = mk(IdentityMode::UserId);
    h.deliver(envelope(
        "orders/paid",
        &OrderSpec::new(1201, None, "g@x.com", T0, "10.00").json(),
        "g",
        T0,
    ));
    assert!(h.commands.is_empty(), "{:?}", h.commands);
    paid(&mut h, 1202, T0, "10.00");
    assert!(
        h.commands
            .iter()
            .all(|c| c.user.email.is_none() && c.user.user_id.is_some())
    );
    assert_eq!(h.profile(&ckey())["email"], json!(EMAIL));
}

#[test]
fn gdpr_redact_data_request_and_shop_redact() {
    let mut h = Harness::default();
    customer_created(&mut h);
    paid(&mut h, 1301, T0, "10.00");
    checkout(&mut h, "tokR", 3401, Some(EMAIL), Some(C), T0 + HOUR);
    h.deliver(envelope(
        "orders/paid",
        &OrderSpec::new(1302, None, EMAIL, T0, "5.00").json(),
        "guest",
        T0,
    ));
    h.deliver(envelope("customers/data_request", &json!({"shop_id": 1, "shop_domain": SHOP, "customer": {"id": C, "email": EMAIL, "phone": null},
        "orders_requested": [1301], "data_request": {"id": 9999}}), "dr", T0 + 2 * HOUR));
    assert_eq!(
        h.reports.len(),
        2,
        "customer key and its email key both report"
    );
    assert_eq!(h.reports[0]["request_id"], json!("9999"));
    assert_eq!(h.reports[0]["orders"][0]["order_id"], json!("1301"));
    h.deliver(envelope("customers/redact", &json!({"shop_id": 1, "shop_domain": SHOP, "customer": {"id": C, "email": EMAIL, "phone": null},
        "orders_to_redact": [1301]}), "rd", T0 + 3 * HOUR));
    let del: Vec<_> = h
        .commands
        .iter()
        .filter(|c| {
            matches!(
                c.action,
                Action::DeleteUser {
                    mode: DeleteMode::Forget
                }
            )
        })
        .collect();
    // The guest order came after the customer claimed the address: it is the customer's, and
    // there is one Iterable user to forget (a guest profile written before the claim would be a
    // second one: see tests/identity.rs).
    assert_eq!(del.len(), 1, "the customer's profile");
    for k in [
        ckey(),
        format!("e/{EMAIL}"),
        "o/1301".into(),
        "o/1302".into(),
    ] {
        assert!(
            h.purged.contains(&format!("{SHOP}/{k}")),
            "{k} not purged: {:?}",
            h.purged
        );
        assert!(!h.states.contains_key(&format!("{SHOP}/{k}")));
    }
    assert!(
        !h.timers.contains_key(&format!("{SHOP}/{}", ckey())),
        "timers dropped"
    );
    h.deliver(envelope(
        "shop/redact",
        &json!({"shop_id": 1, "shop_domain": SHOP}),
        "sr",
        T0 + 4 * HOUR,
    ));
    assert!(h.purged.contains(&format!("{SHOP}/s/-")));
}

#[test]
fn replays_do_not_start_journeys() {
    // Wall clock a year after the events: journey events are suppressed, state, profile fields
    // and purchases are not.
    let mut h = Harness::default();
    h.wall = Some(T0 + 365 * DAY);
    customer_created(&mut h);
    checkout(&mut h, "tokOld", 3501, Some(EMAIL), Some(C), T0);
    paid(&mut h, 1401, T0 + 3 * HOUR, "1200.00");
    h.finish();
    let names: Vec<_> = h
        .commands
        .iter()
        .filter_map(|c| match &c.action {
            Action::TrackEvent { event_name, .. } => Some(event_name.clone()),
            _ => None,
        })
        .collect();
    assert!(names.is_empty(), "{names:?}");
    // ... and each suppression is reported (the decision trail shows it).
    for name in ["customer_created", "first_purchase", "vip_tier_upgraded"] {
        assert!(
            h.suppressed.iter().any(|s| s == name),
            "{name}: {:?}",
            h.suppressed
        );
    }
    assert_eq!(h.purchases().len(), 1);
    let p = h.profile(&ckey());
    assert_eq!(p["shopify_vip_tier"], json!("gold"));
    assert_eq!(p["shopify_lapsed"], json!(true));
    // The checkout was handled: a later live timer does not send it.
    let st = h.state(&ckey());
    assert!(
        st.checkouts
            .iter()
            .all(|k| k.flags & rules::aggregate::K_FIRED != 0)
    );
    // Live: the same log sends the journeys.
    let mut live = Harness::default();
    customer_created(&mut live);
    checkout(&mut live, "tokOld", 3501, Some(EMAIL), Some(C), T0);
    live.advance(T0 + 2 * HOUR);
    assert_eq!(live.events("checkout_abandoned").len(), 1);
    assert_eq!(live.events("customer_created").len(), 1);
}

#[test]
fn every_command_id_is_iterable_safe() {
    let mut h = Harness::default();
    h.deliver(envelope(
        "customers/create",
        &customer_json(BIG_CUSTOMER, "Weird.Name+tag@Example.COM", T0, T0, true),
        "gid://shopify/Delivery/1",
        T0,
    ));
    let mut o = OrderSpec::new(
        820_982_911_946_154_599,
        Some(BIG_CUSTOMER),
        "weird.name+tag@example.com",
        T0,
        "5500.00",
    );
    o.checkout_token = Some("gid://shopify/Checkout/abc?key=1".into());
    h.deliver(envelope("orders/paid", &o.json(), "d/../2", T0));
    h.deliver(envelope(
        "refunds/create",
        &refund_json(1, o.id, T0 + DAY, "10.00", "USD", None),
        "r",
        T0 + DAY,
    ));
    h.finish();
    assert!(h.commands.len() > 5);
    for c in &h.commands {
        assert!(
            !c.command_id.is_empty() && c.command_id.len() <= 512,
            "{}",
            c.command_id
        );
        assert!(
            c.command_id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-'),
            "{}",
            c.command_id
        );
        assert!(!c.source_ids.is_empty());
        assert_eq!(c.customer_key, format!("{SHOP}/c/{BIG_CUSTOMER}"));
    }
    let mut ids: Vec<_> = h.commands.iter().map(|c| &c.command_id).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "command ids are unique");
}

#[test]
fn unparseable_bodies_are_reported() {
    let rules = MarketingRules::new(RulesConfig::default());
    let key = CustomerKey::new(&shop(), KeyKind::Customer, "5");
    let ctx = Ctx {
        now_ms: T0,
        event_time_ms: T0,
        wall_clock_ms: T0,
    };
    for body in [
        json!({"id": 1.5}),
        json!({"id": "abc"}),
        json!({"id": 1, "total_price": "ten"}),
        json!([]),
    ] {
        let mut st = State::default();
        let err = rules
            .on_event(
                &key,
                &mut st,
                &envelope("orders/paid", &body, "x", T0),
                &ctx,
            )
            .unwrap_err();
        assert!(matches!(err, RuleError::Unparseable { .. }), "{err}");
        assert_eq!(
            st,
            State::default(),
            "a failed input leaves the state untouched"
        );
    }
    let mut e = envelope("orders/paid", &json!({}), "x", T0);
    e.body = b"not json".to_vec();
    assert!(
        rules
            .on_event(&key, &mut State::default(), &e, &ctx)
            .is_err()
    );
    // Topics the rules do not use are accepted and ignored.
    let e = envelope("products/update", &json!({"id": 1, "title": "x"}), "p", T0);
    assert!(
        rules
            .on_event(&key, &mut State::default(), &e, &ctx)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn aggregate_stays_small() {
    let mut h = Harness::default();
    customer_created(&mut h);
    paid(&mut h, 1501, T0, "120.00");
    paid(&mut h, 1502, T0 + DAY, "80.00");
    let json = serde_json::to_string(h.state(&ckey())).unwrap();
    assert!(json.len() < 600, "{} bytes: {json}", json.len());
    assert_eq!(serde_json::to_string(&State::default()).unwrap(), "{}");
}
