//! The business operations: what a user can do to sources, destinations,
//! events and API keys, whichever door they come in by (REST API,
//! dashboard, CLI).
//!
//! Each operation takes the [`Caller`] and typed input, checks the caller's
//! scope, validates, composes what must change atomically into one store
//! intent, and does what follows a commit (waking the delivery lanes, the
//! retention task). The API and the dashboard only translate between their
//! wire format and these calls, so a rule lives in exactly one place and the
//! dashboard can never do what the key could not do through the API.

pub mod api_keys;
pub mod audit;
pub mod destinations;
mod error;
pub mod events;
pub mod sessions;
pub mod sources;
pub mod stats;
pub mod stream;

use crate::model::ids::ApiKeyId;
use std::sync::Arc;

pub use error::{FieldError, OpError, Validation};

use crate::config::Config;
use crate::delivery::engine::Engine;
use crate::metrics::Metrics;
use crate::model::records::Scope;
use crate::replay::Replays;
use crate::store::{AuditActor, AuditEntry, Store};

/// Who is asking, with what rights, and through which door.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The API key the request authenticated with (the dashboard's session
    /// and the CLI's local access name theirs).
    pub key_id: ApiKeyId,
    /// The key's name, recorded as the actor of the audit log (SPEC §15).
    pub key_name: String,
    pub scopes: Vec<Scope>,
    pub via: Via,
}

/// The `user-agent` the CLI's API commands send (`krafter-cli/<version>`):
/// the API records their changes with `via: "cli"`. The door is as the
/// client declares it; who made the change is always the authenticated key.
pub const CLI_USER_AGENT: &str = concat!("krafter-cli/", env!("CARGO_PKG_VERSION"));

/// The door a caller came in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Api,
    Dashboard,
    Cli,
}

impl Via {
    /// The audit log's name of the door (`api`, `dashboard`, `cli`).
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Api => "api",
            Via::Dashboard => "dashboard",
            Via::Cli => "cli",
        }
    }
}

impl Caller {
    /// A new audit entry of this caller doing `action` to `target_id` now;
    /// the operation adds the changed fields, the store commits it with
    /// the change.
    pub fn audit(&self, action: &str, target_id: impl ToString) -> AuditEntry {
        // The local operator has no key: id 0 stands for "none".
        let api_key_id = (self.key_id.as_u128() != 0).then(|| self.key_id.to_string());
        AuditEntry::new(
            AuditActor {
                api_key_id,
                name: self.key_name.clone(),
                via: self.via.as_str().to_owned(),
            },
            action,
            target_id.to_string(),
        )
    }

    /// `Forbidden` unless one of the key's scopes grants `needed`.
    pub fn require(&self, needed: Scope) -> Result<(), OpError> {
        if self.scopes.iter().any(|s| s.grants(needed)) {
            Ok(())
        } else {
            Err(OpError::Forbidden(format!(
                "this API key lacks the `{}` scope",
                needed.as_str()
            )))
        }
    }

    /// Whether the key may change sources, destinations and events.
    pub fn can_write(&self) -> bool {
        self.scopes.iter().any(|s| s.grants(Scope::Write))
    }

    /// Whether the key may manage API keys.
    pub fn is_admin(&self) -> bool {
        self.scopes.iter().any(|s| s.grants(Scope::Admin))
    }
}

/// Everything an operation needs; cheap to clone.
#[derive(Clone)]
pub struct Ops {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: Arc<Config>,
    engine: Engine,
    replays: Replays,
    retention: Arc<tokio::sync::Notify>,
    metrics: Arc<Metrics>,
    /// Wakes and closes this node's live event streams.
    hub: Arc<stream::Hub>,
}

impl Ops {
    /// Operations over `store`, waking `engine`'s lanes and `retention`
    /// after the commits that call for it.
    pub fn new(
        store: Store,
        config: Arc<Config>,
        engine: Engine,
        replays: Replays,
        retention: Arc<tokio::sync::Notify>,
        metrics: Arc<Metrics>,
    ) -> Ops {
        Ops {
            inner: Arc::new(Inner {
                store,
                config,
                engine,
                replays,
                retention,
                metrics,
                hub: Arc::default(),
            }),
        }
    }

    /// The store, for reads that need no rule (health, metrics, backup).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }
}

/// One page of a newest-first list, with the cursor of the next page: the
/// store's page, as operations answer it.
pub type Listed<T> = crate::store::Page<T>;
