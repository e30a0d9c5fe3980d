//! Delivery lanes: which lane a command takes, which earlier commands of its user it waits
//! for across lanes, its priority inside the lane, and what a new command supersedes. Pure.
//!
//! Each lane has its own per-user queues, its own in-flight cap (the concurrency of its
//! endpoints) and its own pending bound, so a saturated endpoint (Black Friday's
//! `commerce/updateCart`) only slows the commands of its own lane. Order across lanes is kept
//! only where Iterable's result depends on it (see [`Lane::waits_for`]).

use schemas::command::Action;

use crate::mapping::{Endpoint, Family};

/// A delivery lane: a group of endpoints whose commands queue, wait and are limited together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Profile writes: `users/update` (+ bulk), `updateEmail`, `updateSubscriptions`, `lists/*`.
    Profile,
    /// Custom events (journey triggers): `events/track` (+ bulk).
    Events,
    /// `commerce/trackPurchase`.
    Purchases,
    /// `commerce/updateCart`.
    Carts,
    /// `users/forget` and the deletes.
    Erasure,
    /// Catalog items (products): no user, one queue per item.
    Catalog,
}

impl Lane {
    /// Number of lanes.
    pub const COUNT: usize = 6;
    /// Every lane, in index order.
    pub const ALL: [Lane; Self::COUNT] = [
        Self::Profile,
        Self::Events,
        Self::Purchases,
        Self::Carts,
        Self::Erasure,
        Self::Catalog,
    ];

    /// Position in [`Lane::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Label for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Profile => "profile",
            Self::Events => "events",
            Self::Purchases => "purchases",
            Self::Carts => "carts",
            Self::Erasure => "erasure",
            Self::Catalog => "catalog",
        }
    }

    /// The lane of a command.
    pub fn of(action: &Action) -> Lane {
        match action {
            Action::UpsertUser { .. }
            | Action::ChangeEmail { .. }
            | Action::UpdateSubscriptions(_)
            | Action::ListMembership { .. } => Self::Profile,
            Action::TrackEvent { .. } => Self::Events,
            Action::TrackPurchase { .. } => Self::Purchases,
            Action::UpdateCart { .. } => Self::Carts,
            Action::DeleteUser { .. } => Self::Erasure,
            Action::CatalogUpsert { .. } | Action::CatalogDelete { .. } => Self::Catalog,
        }
    }

    /// The lane of a bulk family.
    pub fn of_family(family: Family) -> Lane {
        match family {
            Family::Users => Self::Profile,
            Family::Events => Self::Events,
        }
    }

    /// The single-record endpoints of the lane: their concurrency sums to the lane's cap.
    pub fn endpoints(self) -> &'static [Endpoint] {
        match self {
            Self::Profile => &[
                Endpoint::UsersUpdate,
                Endpoint::UsersUpdateEmail,
                Endpoint::UsersUpdateSubscriptions,
                Endpoint::ListsSubscribe,
                Endpoint::ListsUnsubscribe,
            ],
            Self::Events => &[Endpoint::EventsTrack],
            Self::Purchases => &[Endpoint::CommerceTrackPurchase],
            Self::Carts => &[Endpoint::CommerceUpdateCart],
            Self::Erasure => &[
                Endpoint::UsersForget,
                Endpoint::UsersDeleteByEmail,
                Endpoint::UsersDeleteByUserId,
            ],
            Self::Catalog => &[
                Endpoint::CatalogsReplaceItem,
                Endpoint::CatalogsBulkDeleteItems,
            ],
        }
    }

    /// The lanes whose *earlier* commands of the same user must be finished (delivered or
    /// dead-lettered) before a command of this lane is sent. Within a lane, a user's
    /// commands always go in Kafka order, one dispatch at a time.
    ///
    /// * Erasure is a barrier both ways: a forget/delete waits for everything before it, and
    ///   everything after it waits for it (a delete followed by a late write would recreate
    ///   the person).
    /// * Events, purchases and carts wait for earlier profile writes: a journey triggered by
    ///   an event reads the profile's new fields (tier, consent, email).
    /// * A purchase clears the cart, so carts and purchases keep their order: a purchase
    ///   waits for an earlier cart already in flight (earlier *queued* carts are superseded,
    ///   see [`supersedes`]) and a later cart waits for the purchase.
    /// * Profile writes wait for nothing but erasure: a profile write overtaking an earlier
    ///   event means the journey may see a later profile, never an older one.
    pub fn waits_for(self) -> &'static [Lane] {
        match self {
            Self::Profile => &[Self::Erasure],
            Self::Events => &[Self::Profile, Self::Erasure],
            Self::Purchases => &[Self::Profile, Self::Carts, Self::Erasure],
            Self::Carts => &[Self::Profile, Self::Purchases, Self::Erasure],
            Self::Erasure => &Self::ALL,
            // Catalog items are keyed by item, never by a user: nothing of a user to wait for.
            Self::Catalog => &[],
        }
    }
}

/// Order inside a lane when its budget (in-flight cap) is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Starts or steers a journey: custom events (abandoned checkout, welcome, first
    /// purchase, VIP, lapse, reactivation), purchases, consent and list changes, email
    /// changes, erasure. Served first.
    Trigger = 0,
    /// Keeps state in sync: profile field updates, carts.
    Sync = 1,
}

impl Priority {
    /// The priority of a command.
    pub fn of(action: &Action) -> Priority {
        match action {
            Action::UpsertUser { .. } | Action::UpdateCart { .. } => Self::Sync,
            _ => Self::Trigger,
        }
    }

    /// Position of the ready queue.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Whether a new command makes an earlier, still queued (not sent) command of the same user
/// redundant. Only "last write wins" writes are superseded: `updateCart` replaces the whole
/// cart, and a purchase clears it. Events and purchases carry ids and are never superseded.
pub fn supersedes(new: &Action, queued: &Action) -> bool {
    matches!(queued, Action::UpdateCart { .. })
        && matches!(
            new,
            Action::UpdateCart { .. } | Action::TrackPurchase { .. }
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn cart() -> Action {
        Action::UpdateCart { items: vec![] }
    }

    fn event() -> Action {
        Action::TrackEvent {
            event_name: "e".into(),
            created_at_s: 0,
            data_fields: Map::new(),
        }
    }

    fn upsert() -> Action {
        Action::UpsertUser {
            data_fields: Map::new(),
            merge_nested_objects: false,
        }
    }

    #[test]
    fn lanes_priorities_and_superseding() {
        assert_eq!(Lane::of(&cart()), Lane::Carts);
        assert_eq!(Lane::of(&event()), Lane::Events);
        assert_eq!(Lane::of(&upsert()), Lane::Profile);
        for l in Lane::ALL {
            assert_eq!(Lane::ALL[l.index()], l);
            assert!(
                l.waits_for().contains(&Lane::Erasure)
                    || matches!(l, Lane::Erasure | Lane::Catalog)
            );
            assert!(Lane::Erasure.waits_for().contains(&l));
        }
        assert!(!Lane::Profile.waits_for().contains(&Lane::Carts));
        assert!(Priority::of(&event()) < Priority::of(&upsert()));
        assert!(supersedes(&cart(), &cart()));
        assert!(!supersedes(&cart(), &event()));
        assert!(!supersedes(&event(), &cart()));
        assert!(!supersedes(&upsert(), &cart()));
    }
}
