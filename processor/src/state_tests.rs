//! Unit tests of the partition state: timers, dedup, changelog round trips, key storage.

use super::*;

type P = PartitionState;

fn timer(id: &str, due: i64) -> Timer {
    Timer {
        kind: "k".into(),
        timer_id: id.into(),
        due_ms: due,
        payload: serde_json::json!({"x": 1}),
    }
}

#[test]
fn timers_fire_in_due_order_and_rearm_replaces() {
    let mut p = P::default();
    p.set_timer("a", timer("t1", 30));
    p.set_timer("b", timer("t1", 10));
    p.set_timer("a", timer("t2", 20));
    p.set_timer("a", timer("t1", 40)); // re-arm replaces a/t1@30
    assert_eq!(p.timers_pending(), 3);
    assert!(p.pop_due(5).is_none());
    let order: Vec<_> = std::iter::from_fn(|| p.pop_due(100))
        .map(|(k, t)| (k, t.due_ms))
        .collect();
    assert_eq!(
        order,
        vec![("b".into(), 10), ("a".into(), 20), ("a".into(), 40)]
    );
    assert_eq!(p.timers_pending(), 0);
}

#[test]
fn due_keys_order_like_the_pairs_they_hold() {
    let pairs = [
        (i64::MIN, 0),
        (-1, u32::MAX),
        (0, 0),
        (0, 1),
        (1, 0),
        (1_767_225_600_000, 7),
        (i64::MAX, u32::MAX),
    ];
    for w in pairs.windows(2) {
        assert!(DueKey::new(w[0].0, w[0].1) < DueKey::new(w[1].0, w[1].1));
    }
    for (d, s) in pairs {
        assert_eq!(DueKey::new(d, s).split(), (d, s));
    }
}

#[test]
fn timers_due_at_the_same_instant_on_one_key_all_fire() {
    let mut p = P::default();
    p.set_timer("a", timer("z", 10));
    p.set_timer("a", timer("m", 10));
    p.set_timer("b", timer("q", 10));
    let fired: Vec<_> = std::iter::from_fn(|| p.pop_due(10))
        .map(|(k, t)| format!("{k}/{}", t.timer_id))
        .collect();
    assert_eq!(fired, vec!["a/m", "a/z", "b/q"]);
}

#[test]
fn dedup_is_windowed_in_event_time_and_bounded() {
    let mut p = P::default();
    p.clock.stream_ms = Some(1_000);
    assert!(!p.seen_before("k", &[1, 2], 1_000, 500, 8));
    assert!(p.seen_before("k", &[2], 1_000, 500, 8));
    p.clock.stream_ms = Some(2_000); // past the window: forgotten
    assert!(!p.seen_before("k", &[1], 2_000, 500, 8));
    for i in 10..20 {
        p.seen_before("k", &[i], 2_000, 500, 4);
    }
    assert_eq!(p.get("k").unwrap().dedup.len(), 4);
}

#[test]
fn changelog_record_round_trips_through_load() {
    let mut p = P::default();
    p.clock.stream_ms = Some(50);
    p.set_aggregate("k", serde_json::json!({"n": 7, "v": "120.50"}), 40);
    p.set_timer("k", timer("t", 99));
    p.set_timer(
        "k",
        Timer {
            kind: "winback".into(),
            timer_id: "winback".into(),
            due_ms: 1_775_000_000_000,
            payload: serde_json::json!({"last_order_ms": 1_767_225_600_000_i64}),
        },
    );
    p.seen_before("k", &[u64::MAX], 50, 1000, 8);
    let rec = p.record("k").unwrap();
    assert_eq!(rec.aggregate_json, r#"{"n":7,"v":"120.50"}"#);
    let mut q = P::default();
    q.load(
        "k",
        Some(KeyStateRecord::decode(&rec.encode().unwrap()).unwrap()),
    )
    .unwrap();
    assert_eq!(q.get("k"), p.get("k"));
    assert_eq!(
        q.aggregate::<serde_json::Value>("k"),
        serde_json::json!({"n": 7, "v": "120.50"})
    );
    assert_eq!(
        q.pop_due(100).unwrap().1.payload,
        serde_json::json!({"x": 1})
    );
    let (_, winback) = q.pop_due(i64::MAX).unwrap();
    assert_eq!(
        (winback.kind.as_str(), winback.timer_id.as_str()),
        ("winback", "winback")
    );
    assert_eq!(
        winback.payload,
        serde_json::json!({"last_order_ms": 1_767_225_600_000_i64})
    );
    q.load("k", None).unwrap();
    assert!(q.is_empty() && q.next_due().is_none());
}

#[test]
fn a_restored_key_leaves_stream_time_to_the_partitions_clock() {
    // A key updated by a forward can be hours ahead of the raw input read so far; its update
    // time must not become the restored partition's stream time.
    let mut p = P::default();
    p.set_aggregate("k", serde_json::json!({"n": 1}), 5_000);
    let rec = p.record("k").unwrap();
    let mut q = P::default();
    q.load("k", Some(rec)).unwrap();
    assert_eq!(q.stream_time(), i64::MIN);
}

#[test]
fn a_record_that_is_not_json_is_a_restore_error() {
    let mut p = P::default();
    let rec = KeyStateRecord {
        key: "k".into(),
        shop_domain: "s".into(),
        updated_at_ms: 1,
        aggregate_json: "{oops".into(),
        timers: vec![],
        dedup: vec![],
    };
    assert!(p.load("k", Some(rec)).is_err());
}

#[test]
fn purge_drops_timers_and_writes_a_tombstone() {
    let mut p = P::default();
    p.set_timer("k", timer("t", 1));
    p.mark_dirty("k");
    p.mark_dirty("other");
    p.purge("k");
    assert!(p.pop_due(10).is_none());
    let changes = p.drain_changes();
    assert!(changes.contains(&("k".into(), None)));
    assert!(changes.iter().any(|(k, r)| k == "other" && r.is_some()));
    assert_eq!(changes.len(), 2);
    assert!(!p.has_changes());
}

#[test]
fn every_key_shape_is_stored_and_found_exactly() {
    let keys = [
        "s.myshopify.com/c/7",
        "s.myshopify.com/c/07",
        "s.myshopify.com/c/0",
        "s.myshopify.com/c/",
        "s.myshopify.com/c/9999999999999999999",
        "s.myshopify.com/c/18446744073709551615",
        "s.myshopify.com/c/99999999999999999999",
        "s.myshopify.com/e/ava@example.org",
        "s.myshopify.com/o/7",
        "other.myshopify.com/c/7",
        "no-slash",
        "",
    ];
    let mut p = P::default();
    for (i, k) in keys.iter().enumerate() {
        p.set_aggregate(k, i, 1);
    }
    assert_eq!(p.len(), keys.len());
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(p.aggregate::<usize>(k), i, "{k}");
        assert_eq!(p.get(k).unwrap().key, *k);
        assert_eq!(p.record(k).unwrap().key, *k);
    }
    assert!(!p.contains("s.myshopify.com/c/8"));
    let mut found = p.keys_with_prefix("s.myshopify.com/c/");
    found.sort();
    assert_eq!(found.len(), 7);
}

#[test]
fn changes_live_decoded_until_drained_then_in_their_slot() {
    let mut p = P::default();
    p.mark_dirty("k");
    p.set_aggregate("k", serde_json::json!({"n": 1}), 10);
    p.set_timer("k", timer("t", 20));
    let slot = p.slot_of("k").unwrap();
    assert!(p.hot.contains_key(&slot));
    assert_ne!(
        p.decode_slot(slot),
        p.get("k"),
        "the slot is written back later"
    );
    let changes = p.drain_changes();
    assert_eq!(changes.len(), 1);
    assert!(p.hot.is_empty());
    assert_eq!(p.decode_slot(slot), p.get("k"));
    assert_eq!(
        p.aggregate::<serde_json::Value>("k"),
        serde_json::json!({"n": 1})
    );
    assert_eq!(
        p.pop_due(20).map(|(k, t)| (k, t.timer_id)),
        Some(("k".into(), "t".into()))
    );
}

#[test]
fn slots_are_reused_and_keys_stay_distinct() {
    let mut p = P::default();
    for i in 0..100 {
        p.set_aggregate(&format!("k{i}"), i, i);
    }
    for i in (0..100).step_by(2) {
        p.purge(&format!("k{i}"));
    }
    for i in 100..150 {
        p.set_aggregate(&format!("k{i}"), i, i);
    }
    assert_eq!(p.len(), 100);
    assert_eq!(p.slots.len(), 100, "freed slots were reused");
    for i in (1..100).step_by(2).chain(100..150) {
        assert_eq!(p.aggregate::<i64>(&format!("k{i}")), i);
    }
    assert!(!p.contains("k0"));
    let mut keys = p.keys_with_prefix("k1");
    keys.sort();
    assert_eq!(keys.first().map(String::as_str), Some("k1"));
}

#[test]
fn a_hot_aggregate_is_kept_typed_and_packed_once_at_the_drain() {
    // Several inputs of one key in one transaction change the rules' value; it is read back
    // as it is (no parse), and serialised and packed once when the changes are drained. The
    // packed bytes must then read as the value did (timestamps near the key's time, decimals,
    // nesting), whether read typed, as text, or written back.
    let mut p = P::default();
    let first = serde_json::json!({"ltv": "10.00"});
    let agg = serde_json::json!({
        "placed": [1_767_225_600_000_i64, 1_767_225_660_000_i64],
        "ltv": "1204.50",
        "tier": {"name": "gold", "since": 1_767_225_600_000_i64},
        "flags": [true, null, -3]
    });
    p.mark_dirty("k");
    p.set_aggregate("k", first, 1_767_225_600_000);
    p.set_aggregate("k", agg.clone(), 1_767_225_700_000);
    let hot = p.get("k").unwrap();
    assert!(
        matches!(hot.hot, entry::Hot::Typed(_)),
        "kept as the rules' value while hot"
    );
    assert!(hot.aggregate.is_empty(), "not packed before the drain");
    assert_eq!(p.aggregate::<serde_json::Value>("k"), agg);
    assert_eq!(hot.aggregate_json(), serde_json::to_string(&agg).unwrap());
    let changes = p.drain_changes();
    assert_eq!(changes.len(), 1);
    let record = changes[0].1.as_ref().unwrap();
    assert_eq!(record.aggregate_json, serde_json::to_string(&agg).unwrap());
    assert_eq!(record.updated_at_ms, 1_767_225_700_000);
    let cold = p.get("k").unwrap();
    assert!(
        matches!(cold.hot, entry::Hot::Cold),
        "written back: only the packed bytes"
    );
    let unpacked: serde_json::Value = serde_json::from_str(
        &crate::pack::unpack_json_near(&cold.aggregate, cold.updated_at_ms).unwrap(),
    )
    .unwrap();
    assert_eq!(unpacked, agg);
    assert_eq!(p.aggregate::<serde_json::Value>("k"), agg);
    assert_eq!(p.record("k").unwrap().aggregate_json, record.aggregate_json);
}

#[test]
fn a_typed_aggregate_never_dirty_is_still_written_back_packed() {
    // Written back without a drain's settle (not marked dirty): the slot must not keep the
    // bytes from before the change.
    let mut p = P::default();
    p.set_aggregate("k", serde_json::json!({"n": 1}), 10);
    let _ = p.drain_changes();
    p.set_aggregate("k", serde_json::json!({"n": 2}), 20);
    let _ = p.drain_changes();
    let cold = p.get("k").unwrap();
    assert!(matches!(cold.hot, entry::Hot::Cold));
    assert_eq!(cold.aggregate_json(), r#"{"n":2}"#);
}

#[test]
fn an_aggregate_lent_to_the_rules_comes_back_as_it_was() {
    // Each input lends the stored value to the rules (no copy); after a failed input it is
    // given back unchanged, and the key's time does not move.
    let mut p = P::default();
    p.mark_dirty("k");
    p.set_aggregate("k", serde_json::json!({"n": 1}), 10);
    let lent: serde_json::Value = p.take_aggregate("k");
    assert_eq!(lent, serde_json::json!({"n": 1}));
    p.put_back_aggregate("k", lent);
    assert_eq!(
        p.aggregate::<serde_json::Value>("k"),
        serde_json::json!({"n": 1})
    );
    assert_eq!(p.get("k").unwrap().updated_at_ms, 10, "no time moved");
    // A cold entry lends a decoded value and stays as it is until the value comes back.
    let _ = p.drain_changes();
    let lent: serde_json::Value = p.take_aggregate("k");
    assert_eq!(lent, serde_json::json!({"n": 1}));
    assert!(matches!(p.get("k").unwrap().hot, entry::Hot::Cold));
    assert_eq!(
        p.aggregate::<serde_json::Value>("k"),
        serde_json::json!({"n": 1})
    );
    p.mark_dirty("k");
    p.set_aggregate("k", serde_json::json!({"n": 2}), 20);
    let changes = p.drain_changes();
    let record = changes[0].1.as_ref().unwrap();
    assert_eq!(record.aggregate_json, r#"{"n":2}"#);
    assert_eq!(record.updated_at_ms, 20);
    // A key never seen lends the default.
    assert_eq!(
        p.take_aggregate::<serde_json::Value>("new"),
        serde_json::Value::Null
    );
}

#[test]
fn the_key_looked_up_last_is_forgotten_with_its_slot() {
    // The last key found is kept with its slot; a purge frees the slot, and the next key may
    // take it, so the remembered pair must not answer for the purged key.
    let mut p = P::default();
    p.set_aggregate("a", 1, 1);
    assert!(p.contains("a"));
    p.purge("a");
    assert!(!p.contains("a"), "a purged key is gone at once");
    p.set_aggregate("b", 2, 2);
    assert_eq!(p.slots.len(), 1, "b took a's slot");
    assert!(!p.contains("a"));
    assert_eq!(p.aggregate::<i64>("a"), 0);
    assert_eq!(p.aggregate::<i64>("b"), 2);
    // A restored record replaces the key (load removes it first) and is found again.
    let record = p.record("b").unwrap();
    p.load("b", Some(record)).unwrap();
    assert_eq!(p.aggregate::<i64>("b"), 2);
    p.load("b", None).unwrap();
    assert!(!p.contains("b"));
}
