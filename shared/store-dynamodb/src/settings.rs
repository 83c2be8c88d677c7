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
