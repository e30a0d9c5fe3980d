//! Unit tests of the sealed formats and the sealer (the Kafka side: runtime/tests/shred.rs).

use std::sync::{Arc, Mutex};

use super::*;

/// One key write: partition, key id, wrapped key.
type Written = (i32, String, Vec<u8>);

/// Keys written by a sealer, in memory.
#[derive(Default, Clone)]
struct Memory(Arc<Mutex<Vec<Written>>>);

impl KeyWriter for Memory {
    fn write(&self, partition: i32, key_id: &str, wrapped: Vec<u8>) -> WriteFuture<'_> {
        let key_id = key_id.to_owned();
        Box::pin(async move {
            self.0.lock().unwrap().push((partition, key_id, wrapped));
            Ok(())
        })
    }
}

fn config() -> ErasureConfig {
    ErasureConfig {
        master_key: Some(Secret::new("0123456789abcdef0123456789abcdef")),
        ..ErasureConfig::default()
    }
}

fn new_sealer(cfg: &ErasureConfig) -> (Sealer, Memory) {
    let memory = Memory::default();
    let sealer = Sealer::new(cfg, 12, Box::new(memory.clone()))
        .unwrap()
        .unwrap();
    (sealer, memory)
}

/// The data key a sealer wrote, unwrapped as a reader would.
fn unwrap(cfg: &ErasureConfig, written: &Written) -> Aes256Gcm {
    let master = MasterKey::new(cfg.master_key.as_ref().unwrap()).unwrap();
    master.unwrap(&written.1, &written.2).unwrap()
}

#[tokio::test]
async fn a_sealed_body_opens_with_its_key_and_reveals_nothing_without_it() {
    let cfg = config();
    let (sealer, memory) = new_sealer(&cfg);
    let body = br#"{"email":"ada@example.com","first_name":"Ada"}"#;
    let sealed = sealer.seal("s.myshopify.com/c/1", body).await.unwrap();
    assert!(is_sealed(&sealed));
    assert!(!sealed.windows(3).any(|w| w == b"ada"), "plaintext leaked");
    let written = memory.0.lock().unwrap().clone();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].0, partition_for("s.myshopify.com/c/1", 12));
    assert_eq!(sealed_key_id(&sealed).unwrap(), written[0].1);
    let cipher = unwrap(&cfg, &written[0]);
    assert_eq!(open(&cipher, &sealed).unwrap(), body);
}

#[tokio::test]
async fn altered_bytes_and_other_keys_are_refused() {
    let cfg = config();
    let (sealer, memory) = new_sealer(&cfg);
    let a = sealer.seal("s.myshopify.com/c/1", b"{}").await.unwrap();
    let b = sealer.seal("s.myshopify.com/c/2", b"{}").await.unwrap();
    let written = memory.0.lock().unwrap().clone();
    let key_a = unwrap(&cfg, &written[0]);
    assert_eq!(open(&key_a, &b), Err(ShredError::Forged));
    let mut altered = a.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert_eq!(open(&key_a, &altered), Err(ShredError::Forged));
    // A wrapped key moved under another id does not unwrap.
    let master = MasterKey::new(cfg.master_key.as_ref().unwrap()).unwrap();
    assert!(master.unwrap(&written[1].1, &written[0].2).is_err());
    // Another master key opens nothing.
    let other = MasterKey::new(&Secret::new("another-master-key-another-master-key")).unwrap();
    assert!(other.unwrap(&written[0].1, &written[0].2).is_err());
}

#[tokio::test]
async fn a_subject_keeps_its_key_for_the_period_and_gets_a_new_one_after_a_redact() {
    let cfg = config();
    let (sealer, memory) = new_sealer(&cfg);
    let key = "s.myshopify.com/e/ada@example.com";
    let first = sealer.seal(key, b"{}").await.unwrap();
    let second = sealer.seal(key, b"{}").await.unwrap();
    assert_eq!(sealed_key_id(&first), sealed_key_id(&second));
    assert_eq!(memory.0.lock().unwrap().len(), 1);
    sealer.forget(key);
    let third = sealer.seal(key, b"{}").await.unwrap();
    assert_ne!(sealed_key_id(&first), sealed_key_id(&third));
    // Rotation: a zero period makes a key per body.
    let rotating = ErasureConfig {
        key_period: Duration::ZERO,
        ..cfg
    };
    let (sealer, memory) = new_sealer(&rotating);
    sealer.seal(key, b"{}").await.unwrap();
    sealer.seal(key, b"{}").await.unwrap();
    assert_eq!(memory.0.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn key_ids_name_shop_and_subject_by_keyed_hash_only() {
    let cfg = config();
    let (sealer, _) = new_sealer(&cfg);
    let key = "s.myshopify.com/e/ada@example.com";
    let sealed = sealer.seal(key, b"{}").await.unwrap();
    let id = sealed_key_id(&sealed).unwrap();
    let hasher = SubjectHasher::new(&cfg.hash_key);
    assert_eq!(subject_of(id), Some(hasher.hex(key).as_str()));
    assert_eq!(
        shop_part_of(id),
        Some(hasher.shop_part("s.myshopify.com").as_str())
    );
    assert!(!id.contains("ada") && !id.contains("myshopify"));
}

#[test]
fn plain_bodies_are_never_taken_for_sealed_ones() {
    for body in [&b"{}"[..], b" {\"a\":1}", b"[]", b"", b"\0", b"\0TS"] {
        assert!(!is_sealed(body));
        assert_eq!(sealed_key_id(body), Err(ShredError::Malformed));
    }
    assert_eq!(
        sealed_key_id(b"\0TSB\x01\x40short"),
        Err(ShredError::Malformed)
    );
}

#[test]
fn a_short_master_key_is_refused_and_no_master_key_means_no_sealing() {
    let weak = ErasureConfig {
        master_key: Some(Secret::new("short")),
        ..ErasureConfig::default()
    };
    assert!(matches!(
        Sealer::new(&weak, 12, Box::new(Memory::default())),
        Err(ShredError::WeakMasterKey)
    ));
    assert!(
        Sealer::new(&ErasureConfig::default(), 12, Box::new(Memory::default()))
            .unwrap()
            .is_none()
    );
}
