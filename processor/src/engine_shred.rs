//! The engine's side of crypto-shredding (runtime::shred): sealed bodies are opened before the
//! rules see them, and an erasure deletes the subject's data keys in its own transaction.

use rules::Rules;
use runtime::shred::Opened;
use schemas::{CustomerKey, ShopifyEnvelope};

use super::{Engine, EngineError};

/// What opening an input's body gave.
pub(super) enum Opening {
    /// Not sealed: the envelope is used as it is.
    Plain,
    /// The envelope with its body opened.
    Opened(Box<ShopifyEnvelope>),
    /// The body's data key was erased: the input is about an erased subject and is dropped.
    KeyGone,
    /// Sealed, but it cannot be opened here (no master key, a malformed or forged body):
    /// dead-lettered with this reason.
    Unreadable(String),
}

impl<R: Rules> Engine<R> {
    /// Opens `env`'s body, read from raw `partition` (where its data key lives too).
    pub(super) fn open_body(
        &self,
        partition: i32,
        env: &ShopifyEnvelope,
    ) -> Result<Opening, EngineError> {
        if !runtime::shred::is_sealed(&env.body) {
            return Ok(Opening::Plain);
        }
        let outcome = |o: &str| self.metrics.sealed_inputs.with_label_values(&[o]).inc();
        let Some(keys) = &self.keys else {
            outcome("unreadable");
            return Ok(Opening::Unreadable(
                "sealed body, but erasure.master_key is not set".into(),
            ));
        };
        match keys.open(&env.body, partition) {
            Ok(Opened::Plain(_)) => Ok(Opening::Plain),
            Ok(Opened::Opened(body)) => {
                outcome("opened");
                Ok(Opening::Opened(Box::new(ShopifyEnvelope {
                    body,
                    ..env.clone()
                })))
            }
            Ok(Opened::KeyGone) => {
                outcome("key_gone");
                Ok(Opening::KeyGone)
            }
            Err(runtime::shred::ShredError::Kafka(e)) => Err(EngineError::Fatal(format!(
                "cannot read the data keys: {e}"
            ))),
            Err(e) => {
                outcome("unreadable");
                Ok(Opening::Unreadable(e.to_string()))
            }
        }
    }

    /// Deletes `key`'s data keys: tombstones in the open transaction, with the erasure marker.
    pub(super) fn shred(&mut self, key: &CustomerKey) -> Result<(), EngineError> {
        let gone = self.keys.as_ref().map(|k| k.erase(key.as_str()));
        self.tombstone(gone.unwrap_or_default())
    }

    /// Deletes a redacted shop's data keys in `partition` (every owner does its own).
    pub(super) fn shred_shop(&mut self, shop: &str, partition: i32) -> Result<(), EngineError> {
        let gone = self.keys.as_ref().map(|k| k.erase_shop(shop, partition));
        self.tombstone(gone.unwrap_or_default())
    }

    fn tombstone(&mut self, gone: Vec<(i32, String)>) -> Result<(), EngineError> {
        let topic = self.topics.keys.clone();
        for (partition, id) in gone {
            self.send_to(&topic, &id, Some(partition), None, None)?;
            self.metrics.keys_erased.inc();
        }
        Ok(())
    }

    /// Loads the data keys of the partitions this engine was just assigned.
    pub(super) fn reload_keys(&mut self, assigned: &[i32]) -> Result<(), EngineError> {
        if let Some(keys) = &mut self.keys {
            keys.load(assigned)
                .map_err(|e| EngineError::Fatal(format!("cannot load the data keys: {e}")))?;
        }
        Ok(())
    }
}
