//! The stack the end-to-end tests run against: template.yaml itself,
//! deployed into the emulator by `infra/emulator/deploy_template.py`
//! (samtranslator expands the SAM transform, the emulator's CloudFormation
//! creates the tables, stream, bus, rules, queues with their redrive
//! policies and the functions). The event source mappings are left out —
//! the emulator would consume the queues itself — and come back here as
//! settings for the [`crate::driver`], which stands in for them.

use std::collections::HashMap;
use std::process::Command;

use serde::Deserialize;

use crate::{endpoint, python, workspace_root};

/// One event source mapping of the template, its references resolved.
#[derive(Debug, Clone, Deserialize)]
pub struct EventSourceMapping {
    /// The function's logical id, e.g. `StreamPublisherFunction`.
    pub function: String,
    /// `dynamodb` or `sqs`.
    pub kind: String,
    /// The stream or queue ARN.
    pub source_arn: String,
    /// The queue URL (SQS mappings).
    #[serde(default)]
    pub queue_url: Option<String>,
    /// Records per invocation.
    pub batch_size: usize,
    /// Halve the batch after a function error.
    #[serde(default)]
    pub bisect_on_error: bool,
    /// Retries of a failing stream record (`None` or -1: until it expires).
    #[serde(default)]
    pub maximum_retry_attempts: Option<i64>,
    /// Whether the function reports per-item failures.
    #[serde(default)]
    pub report_batch_item_failures: bool,
    /// Where a stream record given up on is described.
    #[serde(default)]
    pub on_failure_queue_url: Option<String>,
    /// Concurrent invocations (SQS).
    #[serde(default)]
    pub maximum_concurrency: Option<u32>,
}

/// A function of the template.
#[derive(Debug, Clone, Deserialize)]
pub struct Function {
    /// Its environment, references resolved.
    pub env: HashMap<String, String>,
}

/// The deployed stack.
#[derive(Debug, Clone, Deserialize)]
pub struct Deployment {
    /// The stack name.
    pub stack: String,
    /// The template's outputs (`None`: names a resource the emulator skips,
    /// such as the HTTP API).
    pub outputs: HashMap<String, Option<String>>,
    /// Functions by logical id.
    pub functions: HashMap<String, Function>,
    /// The event source mappings, for the driver.
    pub event_source_mappings: Vec<EventSourceMapping>,
}

impl Deployment {
    /// An output of the template; panics naming it if absent (a test setup error).
    pub fn output(&self, name: &str) -> &str {
        self.outputs
            .get(name)
            .and_then(Option::as_deref)
            .unwrap_or_else(|| panic!("template output {name} missing from {:?}", self.outputs))
    }

    /// A function's environment; panics naming it if absent.
    pub fn env(&self, function: &str) -> &HashMap<String, String> {
        &self
            .functions
            .get(function)
            .unwrap_or_else(|| panic!("function {function} missing from the template"))
            .env
    }

    /// The mapping feeding `function`; panics naming it if absent.
    pub fn mapping(&self, function: &str) -> &EventSourceMapping {
        self.event_source_mappings
            .iter()
            .find(|m| m.function == function)
            .unwrap_or_else(|| panic!("no event source mapping for {function}"))
    }
}

/// Deploys template.yaml into the emulator under a fresh stage name.
pub fn deploy_template() -> Deployment {
    let stage = format!("t{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let root = workspace_root();
    let output = Command::new(python())
        .arg(root.join("infra/emulator/deploy_template.py"))
        .args(["--endpoint", endpoint(), "--stage", &stage])
        .arg("--template")
        .arg(root.join("template.yaml"))
        .output()
        .expect("run infra/emulator/deploy_template.py");
    assert!(
        output.status.success(),
        "deploying template.yaml into the emulator failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "deploy_template.py printed no deployment ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}
