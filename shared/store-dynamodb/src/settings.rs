//! Configuration by name. A Lambda reads its settings from the process
//! environment that template.yaml gives it; the end-to-end tests read the
//! very same names from the environment the template gives each function
//! once deployed into the emulator, so handlers are wired identically in
//! both places. The names themselves live in [`crate::schema`].

use std::collections::HashMap;

/// A required setting is missing.
#[derive(Debug, thiserror::Error)]
#[error("setting {0} is required (an environment variable of the function)")]
pub struct MissingSetting(pub &'static str);

/// Where settings come from.
pub trait Settings {
    /// The value of `name`, if set and not empty.
    fn get(&self, name: &str) -> Option<String>;

    /// The value of `name`, which must be set.
    fn require(&self, name: &'static str) -> Result<String, MissingSetting> {
        self.get(name).ok_or(MissingSetting(name))
    }
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Env;

impl Settings for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Settings for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).filter(|v| !v.is_empty()).cloned()
    }
}

/// The names template.yaml gives a stage's resources (`tally-<stage>-…`),
/// for an operator's tool on AWS: each setting is the environment variable
/// when set, else the template's name. The snapshot interval is the
/// template's default, 1, unless `TALLY_SNAPSHOT_INTERVAL` says otherwise.
#[derive(Debug, Clone)]
pub struct StageNames {
    stage: String,
}

impl StageNames {
    /// The resources of `stage` (template parameter `Stage`).
    pub fn new(stage: impl Into<String>) -> Self {
        Self { stage: stage.into() }
    }

    /// The stage.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    fn template_name(&self, name: &str) -> Option<String> {
        use crate::schema::*;
        let suffix = match name {
            ENV_EVENTS_TABLE => "events",
            ENV_IDEMPOTENCY_TABLE => "idempotency",
            ENV_INVENTORY_TABLE => "inventory-levels",
            ENV_ORDER_SUMMARY_TABLE => "order-summary",
            ENV_ORDER_SUMMARY_GREEN_TABLE => "order-summary-green",
            ENV_SALES_TABLE => "sales-by-day",
            ENV_SALES_GREEN_TABLE => "sales-by-day-green",
            ENV_CHECKPOINTS_TABLE => "checkpoints",
            ENV_SNAPSHOT_INTERVAL => return Some(TEMPLATE_SNAPSHOT_INTERVAL.to_string()),
            _ => return None,
        };
        Some(format!("tally-{}-{suffix}", self.stage))
    }
}

/// template.yaml's default `SnapshotInterval`.
pub const TEMPLATE_SNAPSHOT_INTERVAL: u64 = 1;

impl Settings for StageNames {
    fn get(&self, name: &str) -> Option<String> {
        Env.get(name).or_else(|| self.template_name(name))
    }
}
