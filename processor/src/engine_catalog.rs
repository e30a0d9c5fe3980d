//! The engine's side of the product catalog (the table itself is `crate::catalog`): a
//! `products/*` input on an owned product key updates the table, writes the product's record
//! to the products topic and, when the catalog item changed, a catalog command; every command
//! is enriched from the table before it is written.

use std::sync::Arc;

use rdkafka::message::BorrowedMessage;
use rules::Rules;
use rules::catalog::{CatalogConfig, Product, document, enrich};
use schemas::{Action, CustomerKey, IterableCommand, ShopifyEnvelope, UserRef, iterable_id};

use super::{Engine, EngineError};
use crate::catalog::{Catalog, Version};

/// What the engine needs for the catalog: the table and the rules file's `[catalog]`.
pub struct CatalogPart {
    /// The product table.
    pub catalog: Catalog,
    /// `[catalog]` of the rules file.
    pub cfg: Arc<CatalogConfig>,
    /// The abandoned-checkout event name, whose items are enriched too.
    pub checkout_event: String,
}

impl CatalogPart {
    /// The part for one more engine thread: each thread owns and reloads its own table, since
    /// the reload after an abort must forget exactly that thread's uncommitted versions (memory
    /// grows with `engine.threads`, see ARCHITECTURE.md).
    pub(super) fn for_thread(&self) -> Self {
        Self {
            catalog: self.catalog.sibling(),
            cfg: Arc::clone(&self.cfg),
            checkout_event: self.checkout_event.clone(),
        }
    }
}

impl<R: Rules> Engine<R> {
    /// Applies a `products/*` input on its product key (this instance owns it).
    pub(super) fn on_product(
        &mut self,
        msg: &BorrowedMessage<'_>,
        key: &CustomerKey,
        env: &ShopifyEnvelope,
        event_time: i64,
    ) -> Result<(), EngineError> {
        let Some(part) = &self.catalog else {
            return Ok(());
        };
        let deleted = env.topic == "products/delete";
        let body = serde_json::from_slice::<serde_json::Value>(&env.body)
            .ok()
            .filter(serde_json::Value::is_object);
        let version = match (deleted, body) {
            (true, _) => Version {
                at_ms: event_time,
                product: None,
            },
            (false, Some(body)) => {
                let product = Product::from_payload(key.id(), &body);
                Version {
                    at_ms: product.updated_ms.unwrap_or(event_time),
                    product: Some(Arc::new(product)),
                }
            }
            (false, None) => {
                return self.dead_letter(
                    msg,
                    "unparseable_body",
                    "product body is not a JSON object",
                );
            }
        };
        let cfg = Arc::clone(&part.cfg);
        let updates = part.catalog.metrics.updates.clone();
        let item = |v: Option<&Version>| {
            let p = v?.product.as_ref()?;
            p.listed(&cfg)
                .then(|| (document::item_id(&cfg, p), document::document(&cfg, p)))
        };
        let (record, before, after) = {
            let mut table = part.catalog.write();
            let before = item(table.current(key.as_str()));
            if !table.merge(key.as_str(), vec![version]) {
                // The same version again (a redelivery under another id): nothing to do.
                updates.with_label_values(&["duplicate"]).inc();
                return Ok(());
            }
            let after = item(table.current(key.as_str()));
            let record = table.record(key.as_str()).cloned().unwrap_or_default();
            part.catalog.metrics.observe(&table);
            (record, before, after)
        };
        let bytes = serde_json::to_vec(&record)
            .map_err(|e| EngineError::Fatal(format!("cannot encode a product record: {e}")))?;
        let topic = self.topics.products.clone();
        self.send(&topic, key.as_str(), Some(&bytes), None)?;
        let changed = cfg.sync && before != after;
        let outcome = if changed { "changed" } else { "unchanged" };
        updates.with_label_values(&[outcome]).inc();
        if !changed {
            // Only changed catalog items are sent again.
            return Ok(());
        }
        let at = record.versions.last().map_or(event_time, |v| v.at_ms);
        let mut actions = Vec::new();
        if let Some((old_id, _)) = &before
            && after.as_ref().is_none_or(|(id, _)| id != old_id)
        {
            actions.push(Action::CatalogDelete {
                catalog: cfg.name.clone(),
                item_id: old_id.clone(),
            });
        }
        if let Some((item_id, doc)) = after {
            actions.push(Action::CatalogUpsert {
                catalog: cfg.name.clone(),
                item_id,
                document: doc,
            });
        }
        for action in actions {
            let cmd = IterableCommand {
                command_id: iterable_id(&[
                    &env.shop_domain,
                    action.kind(),
                    key.id(),
                    &at.to_string(),
                ]),
                shop_domain: env.shop_domain.clone(),
                customer_key: key.as_str().to_owned(),
                user: UserRef::default(),
                event_time_ms: at,
                source_ids: vec![env.delivery_id.clone()],
                action,
            };
            let bytes = cmd
                .encode()
                .map_err(|e| EngineError::Fatal(format!("cannot encode a command: {e}")))?;
            self.metrics
                .commands
                .with_label_values(&[cmd.action.kind()])
                .inc();
            let topic = self.topics.commands.clone();
            self.send(&topic, key.as_str(), Some(&bytes), None)?;
        }
        Ok(())
    }

    /// Fills the command's commerce items from the product version current at its event time.
    pub(super) fn enrich(&self, cmd: &mut IterableCommand) {
        let Some(part) = &self.catalog else {
            return;
        };
        if !part.cfg.enrich {
            return;
        }
        let total = match &cmd.action {
            Action::TrackPurchase { items, .. } | Action::UpdateCart { items } => items.len(),
            Action::TrackEvent {
                event_name,
                data_fields,
                ..
            } if *event_name == part.checkout_event => data_fields
                .get("items")
                .and_then(serde_json::Value::as_array)
                .map_or(0, Vec::len),
            _ => return,
        };
        let table = part.catalog.read();
        let shop = cmd.shop_domain.clone();
        let at = cmd.event_time_ms;
        let lookup = |product_id: &str| table.as_of(&product_key(&shop, product_id), at);
        let hits = enrich::enrich_command(&part.cfg, &part.checkout_event, cmd, &lookup);
        let items = &part.catalog.metrics.items;
        items.with_label_values(&["hit"]).inc_by(hits as u64);
        items
            .with_label_values(&["miss"])
            .inc_by(total.saturating_sub(hits) as u64);
    }

    /// Replaces the table with the committed products topic (at assignment, after an abort).
    pub(super) fn reload_catalog(&mut self) -> Result<(), EngineError> {
        if let Some(part) = &mut self.catalog {
            part.catalog
                .reload()
                .map_err(|e| EngineError::Fatal(e.to_string()))?;
        }
        Ok(())
    }
}

/// The key of a product (the routing rule's `{shop}/p/{id}`).
fn product_key(shop: &str, product_id: &str) -> String {
    format!("{shop}/{}/{product_id}", schemas::KeyKind::Product.tag())
}
