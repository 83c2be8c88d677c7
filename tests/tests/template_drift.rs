//! template.yaml against the code: fails when the two drift apart.
//!
//! The template is what AWS gets; the code is what runs there. This test
//! reads both and checks that they still describe the same system:
//!
//! - every `AWS::Serverless::Function` builds a binary of a crate under
//!   `functions/`, and every such crate is deployed;
//! - every setting a function's code reads is in its environment (and every
//!   `TALLY_*` variable the template sets is read), `TALLY_PROJECTION` names
//!   a projection the domain has;
//! - every AWS action a function's code calls is granted on the resource it
//!   calls it on, and its role grants nothing else beyond a short, explicit
//!   list (logs, traces, and what its event source mapping does for it);
//! - the bus rules match what the publisher sends, every projection queue
//!   redrives to a dead-letter queue, and the tables' keys are the ones named
//!   in `tally_store_dynamodb::schema`;
//! - infra/localstack/docker-compose.yml pins its image and enables every
//!   service the template's resources live in.
//!
//! The code side is derived, not copied: each function's `main.rs` is parsed
//! (with `syn`) and followed through the workspace crates it depends on —
//! constructors, methods called by name on the types it built, the handlers
//! its router names — collecting the `ENV_*` constants it reads and the SDK
//! calls it makes; what only another projection's `match` arm reaches is
//! not a projector's own. Names the code reads are the Rust constants
//! themselves (a rename fails to compile here), and the one hand-kept table,
//! [`TARGETS`], says which table each SDK call site works on (both slots,
//! blue and green, when the table is chosen at run time); it must cover
//! every call site in the scanned crates and name none that is gone.
//!
//! The test never calls AWS or the emulator: it reads files.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_yaml_ng::{Mapping, Value};
use syn::visit::Visit;
use tally_bus::projector::ENV_PROJECTION;
use tally_bus::publisher::{ENV_EVENT_BUS, EVENT_SOURCE};
use tally_core::Decider;
use tally_domain::Order;
use tally_domain::views::{self, PROJECTIONS};
use tally_store_dynamodb::schema::{
    BY_CUSTOMER_INDEX, CUSTOMER_ID, ENV_CHECKPOINTS_TABLE, ENV_EVENTS_TABLE, ENV_IDEMPOTENCY_TABLE,
    ENV_INVENTORY_TABLE, ENV_ORDER_SUMMARY_GREEN_TABLE, ENV_ORDER_SUMMARY_TABLE, ENV_SALES_GREEN_TABLE,
    ENV_SALES_TABLE, ENV_SNAPSHOT_INTERVAL, EVENTS_PK, EVENTS_SK, IDEMPOTENCY_PK, IDEMPOTENCY_TTL, PLACED_KEY, READ_PK,
};

// ---------------------------------------------------------------------------
// What is kept by hand, each entry with its reason.
// ---------------------------------------------------------------------------

/// Every `ENV_*` constant the code may read, by the name the code uses: the
/// scanner meets identifiers, the test needs their values. A constant the
/// scanner meets that is missing here fails the test.
const ENV_CONSTANTS: &[(&str, &str)] = &[
    ("ENV_EVENTS_TABLE", ENV_EVENTS_TABLE),
    ("ENV_IDEMPOTENCY_TABLE", ENV_IDEMPOTENCY_TABLE),
    ("ENV_INVENTORY_TABLE", ENV_INVENTORY_TABLE),
    ("ENV_SNAPSHOT_INTERVAL", ENV_SNAPSHOT_INTERVAL),
    ("ENV_ORDER_SUMMARY_TABLE", ENV_ORDER_SUMMARY_TABLE),
    ("ENV_SALES_TABLE", ENV_SALES_TABLE),
    ("ENV_ORDER_SUMMARY_GREEN_TABLE", ENV_ORDER_SUMMARY_GREEN_TABLE),
    ("ENV_SALES_GREEN_TABLE", ENV_SALES_GREEN_TABLE),
    ("ENV_CHECKPOINTS_TABLE", ENV_CHECKPOINTS_TABLE),
    ("ENV_EVENT_BUS", ENV_EVENT_BUS),
    ("ENV_PROJECTION", ENV_PROJECTION),
];

/// The projection names a `match` arm may select on (`views::ORDER_SUMMARY
/// => …`): settings read inside such an arm are needed only by the
/// projector whose `TALLY_PROJECTION` is that name.
const PROJECTION_CONSTANTS: &[(&str, &str)] = &[
    ("ORDER_SUMMARY", views::ORDER_SUMMARY),
    ("SALES_BY_DAY", views::SALES_BY_DAY),
];

/// Other constants a call site may pass (an index name).
const INDEX_CONSTANTS: &[(&str, &str)] = &[("BY_CUSTOMER_INDEX", BY_CUSTOMER_INDEX)];

/// Which resource each SDK call site works on, as the settings that name it:
/// (function, the expression given as `table_name`/`request_items`, or ""
/// for a call without a table, the settings it may be, why). A function
/// running the call needs the action on every one of these resources it has
/// a setting for. An empty list marks code no Lambda may reach.
const TARGETS: &[(&str, &str, &[&str], &str)] = &[
    // The event store (shared/store-dynamodb/src/store.rs).
    (
        "DynamoStore::query_stream",
        "self.config.events_table",
        &[ENV_EVENTS_TABLE],
        "loading and reading streams",
    ),
    (
        "DynamoStore::transact_items",
        "self.config.events_table",
        &[ENV_EVENTS_TABLE],
        "event puts and the head check",
    ),
    (
        "DynamoStore::transact_items",
        "table",
        &[ENV_INVENTORY_TABLE],
        "inline views: DynamoConfig::view_tables holds inventory_levels only",
    ),
    (
        "DynamoStore::transact_items",
        "self.config.idempotency_table",
        &[ENV_IDEMPOTENCY_TABLE],
        "the idempotency record",
    ),
    (
        "DynamoStore::put_one",
        "put.table_name",
        &[ENV_EVENTS_TABLE, ENV_IDEMPOTENCY_TABLE, ENV_INVENTORY_TABLE],
        "a single-item append sends the one Put transact_items built, whichever table it is for",
    ),
    (
        "DynamoStore::idempotency_record",
        "self.config.idempotency_table",
        &[ENV_IDEMPOTENCY_TABLE],
        "replaying a response",
    ),
    // The projections' sinks (projections.rs). A projector builds one sink
    // per slot (SlotTables::sink), so a model's table is its blue or its
    // green one, whichever the generation item names at run time.
    (
        "DynamoProjectionSink::read_item",
        "table",
        &[
            ENV_ORDER_SUMMARY_TABLE,
            ENV_ORDER_SUMMARY_GREEN_TABLE,
            ENV_CHECKPOINTS_TABLE,
        ],
        "the order row in either slot (its version is the checkpoint) or the sales checkpoint",
    ),
    (
        "DynamoProjectionSink::put_summary",
        "table",
        &[ENV_ORDER_SUMMARY_TABLE, ENV_ORDER_SUMMARY_GREEN_TABLE],
        "the order row, in either slot",
    ),
    (
        "DynamoProjectionSink::read_rows",
        "table",
        &[],
        "a rebuild's batches (apply_batch): the CLI only, the projector delivers event by event",
    ),
    (
        "DynamoProjectionSink::transact_sales",
        "checkpoints",
        &[],
        "a rebuild's batches (apply_batch): the CLI only, the projector delivers event by event",
    ),
    (
        "DynamoProjectionSink::transact_sales",
        "table",
        &[],
        "a rebuild's batches (apply_batch): the CLI only, the projector delivers event by event",
    ),
    (
        "DynamoProjectionSink::apply_sales",
        "checkpoints",
        &[ENV_CHECKPOINTS_TABLE],
        "the sales checkpoint",
    ),
    (
        "DynamoProjectionSink::apply_sales",
        "checkpoint.table_name",
        &[ENV_CHECKPOINTS_TABLE],
        "the sales checkpoint",
    ),
    (
        "DynamoProjectionSink::apply_sales",
        "table",
        &[ENV_SALES_TABLE, ENV_SALES_GREEN_TABLE],
        "the day's totals, in either slot",
    ),
    (
        "FailureLog::record",
        "self.table",
        &[ENV_CHECKPOINTS_TABLE],
        "failures live in the checkpoints table",
    ),
    (
        "FailureLog::lookup",
        "self.table",
        &[ENV_CHECKPOINTS_TABLE],
        "failures live in the checkpoints table",
    ),
    // The generations of the eventual read models (generations.rs).
    (
        "SlotTables::state",
        "self.checkpoints",
        &[ENV_CHECKPOINTS_TABLE],
        "the generation item (which slot is live), read by the projectors and the query API",
    ),
    (
        "SlotTables::store",
        "self.checkpoints",
        &[],
        "the generation item is written by `tally rebuild` (the CLI) only, never a Lambda",
    ),
    (
        "DynamoLeases::take",
        "self.table",
        &[],
        "the rebuild lease: `tally rebuild` (the CLI) only, never a Lambda",
    ),
    (
        "DynamoLeases::release",
        "self.table",
        &[],
        "the rebuild lease: `tally rebuild` (the CLI) only, never a Lambda",
    ),
    (
        "delete_all",
        "table",
        &[],
        "emptying a slot: `tally rebuild` (the CLI) only, never a Lambda",
    ),
    (
        "LiveModel::scan_all",
        "table",
        &[],
        "reading a whole slot: `tally verify projections` (the CLI) only, never a Lambda",
    ),
    // The events table read whole (history.rs).
    (
        "DynamoHistory::page",
        "self.table",
        &[],
        "a rebuild's replay: the CLI only, never a Lambda",
    ),
    (
        "DynamoHistory::count_items",
        "self.table",
        &[],
        "a rebuild's progress: the CLI only, never a Lambda",
    ),
    (
        "DynamoHistory::estimated_items",
        "self.table",
        &[],
        "a rebuild's progress: the CLI only, never a Lambda",
    ),
    (
        "DynamoHistory::verify_chain_of",
        "self.table",
        &[],
        "`tally verify chain`: the CLI only, never a Lambda",
    ),
    // The query side (reads.rs): an eventual model is read from the slot
    // LiveSlot::table names at run time, blue or green.
    (
        "DynamoReadModels::get",
        "table",
        &[
            ENV_INVENTORY_TABLE,
            ENV_ORDER_SUMMARY_TABLE,
            ENV_ORDER_SUMMARY_GREEN_TABLE,
        ],
        "inventory_level, and order_summary in its live slot",
    ),
    (
        "DynamoReadModels::orders_by_customer",
        "table",
        &[ENV_ORDER_SUMMARY_TABLE, ENV_ORDER_SUMMARY_GREEN_TABLE],
        "the live slot's index",
    ),
    (
        "DynamoReadModels::sales_by_day",
        "table",
        &[ENV_SALES_TABLE, ENV_SALES_GREEN_TABLE],
        "the days asked for, in the live slot",
    ),
    // The bus (shared/bus).
    (
        "Publisher::send",
        "",
        &[ENV_EVENT_BUS],
        "every entry names the configured bus",
    ),
    (
        "approximate_count",
        "",
        &[],
        "dlq.rs: `tally dlq list` (the CLI), never a Lambda",
    ),
    ("receive_some", "", &[], "dlq.rs: `tally dlq` (the CLI), never a Lambda"),
    ("release", "", &[], "dlq.rs: `tally dlq list` (the CLI), never a Lambda"),
    (
        "redrive_reported",
        "",
        &[],
        "dlq.rs: `tally dlq redrive` (the CLI), never a Lambda",
    ),
];

/// The triggers each deployed binary is built for. Their mappings act with
/// the function's role, so what they do is allowed on top of the code's
/// needs ([`trigger_grants`]); a function with another trigger fails.
const TRIGGERS: &[(&str, &[&str])] = &[
    ("command-api", &[]),
    ("stream-publisher", &["DynamoDB"]),
    ("projector", &["SQS"]),
    ("query-api", &[]),
];

/// SDK operation → the IAM action it needs (`None`: authorised per item,
/// through the builders below). Calls are recognised by name, without
/// arguments, as the fluent SDK clients spell them.
const SDK_OPERATIONS: &[(&str, Option<&str>)] = &[
    ("query", Some("dynamodb:Query")),
    ("scan", Some("dynamodb:Scan")),
    ("get_item", Some("dynamodb:GetItem")),
    ("put_item", Some("dynamodb:PutItem")),
    ("update_item", Some("dynamodb:UpdateItem")),
    ("delete_item", Some("dynamodb:DeleteItem")),
    ("batch_get_item", Some("dynamodb:BatchGetItem")),
    ("batch_write_item", Some("dynamodb:BatchWriteItem")),
    ("describe_table", Some("dynamodb:DescribeTable")),
    // TransactWriteItems and TransactGetItems have no IAM action of their
    // own: each contained item is authorised as its own action.
    ("transact_write_items", None),
    ("transact_get_items", None),
    ("put_events", Some("events:PutEvents")),
    ("send_message", Some("sqs:SendMessage")),
    ("send_message_batch", Some("sqs:SendMessage")),
    ("receive_message", Some("sqs:ReceiveMessage")),
    ("delete_message", Some("sqs:DeleteMessage")),
    ("delete_message_batch", Some("sqs:DeleteMessage")),
    ("change_message_visibility", Some("sqs:ChangeMessageVisibility")),
    ("change_message_visibility_batch", Some("sqs:ChangeMessageVisibility")),
    ("get_queue_attributes", Some("sqs:GetQueueAttributes")),
];

/// The items of a DynamoDB transaction (`Put::builder()` …), and their actions.
const TRANSACT_ITEMS: &[(&str, &str)] = &[
    ("Put", "dynamodb:PutItem"),
    ("Update", "dynamodb:UpdateItem"),
    ("Delete", "dynamodb:DeleteItem"),
    ("ConditionCheck", "dynamodb:ConditionCheckItem"),
    ("Get", "dynamodb:GetItem"),
];

/// What every function may be granted for the platform rather than for its
/// code: (action, resource, why). `{log_group}` is its own log group.
const PLATFORM_GRANTS: &[(&str, &str, &str)] = &[
    (
        "logs:CreateLogStream",
        "{log_group}",
        "Lambda writes the function's logs with its role",
    ),
    (
        "logs:PutLogEvents",
        "{log_group}",
        "Lambda writes the function's logs with its role",
    ),
    (
        "xray:PutTraceSegments",
        "*",
        "Tracing: Active; X-Ray's actions have no resource types",
    ),
    (
        "xray:PutTelemetryRecords",
        "*",
        "Tracing: Active; X-Ray's actions have no resource types",
    ),
];

/// What an event source mapping does with the function's role, per trigger
/// type: (action, resource, why). `{stream}`, `{table}`, `{queue}` and
/// `{on_failure}` are the trigger's.
const TRIGGER_GRANTS: &[(&str, &str, &str, &str)] = &[
    (
        "DynamoDB",
        "dynamodb:DescribeStream",
        "{stream}",
        "the stream mapping reads the shards",
    ),
    (
        "DynamoDB",
        "dynamodb:GetRecords",
        "{stream}",
        "the stream mapping reads the shards",
    ),
    (
        "DynamoDB",
        "dynamodb:GetShardIterator",
        "{stream}",
        "the stream mapping reads the shards",
    ),
    (
        "DynamoDB",
        "dynamodb:ListStreams",
        "{table}/stream/*",
        "the stream mapping lists the table's streams",
    ),
    (
        "DynamoDB",
        "sqs:SendMessage",
        "{on_failure}",
        "the mapping parks a failed batch in its on-failure queue",
    ),
    ("SQS", "sqs:ReceiveMessage", "{queue}", "the queue mapping polls"),
    (
        "SQS",
        "sqs:DeleteMessage",
        "{queue}",
        "the queue mapping deletes what succeeded",
    ),
    (
        "SQS",
        "sqs:GetQueueAttributes",
        "{queue}",
        "the queue mapping reads the queue's settings",
    ),
];

// ---------------------------------------------------------------------------
// template.yaml
// ---------------------------------------------------------------------------

fn root() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).to_owned()
}

/// A short-form tag (`!Ref X`, `!GetAtt A.B`, `!Sub s`) as CloudFormation's
/// long form (`{Ref: X}`, `{Fn::GetAtt: [A, B]}`, `{Fn::Sub: s}`).
fn long_form(value: Value) -> Value {
    match value {
        Value::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let key = if name == "Ref" {
                "Ref".to_owned()
            } else {
                format!("Fn::{name}")
            };
            let mut inner = long_form(tagged.value);
            if name == "GetAtt"
                && let Value::String(text) = &inner
                && let Some((resource, attribute)) = text.split_once('.')
            {
                inner = Value::Sequence(vec![resource.into(), attribute.into()]);
            }
            Value::Mapping(Mapping::from_iter([(Value::String(key), inner)]))
        }
        Value::Sequence(items) => Value::Sequence(items.into_iter().map(long_form).collect()),
        Value::Mapping(map) => Value::Mapping(map.into_iter().map(|(k, v)| (k, long_form(v))).collect()),
        other => other,
    }
}

fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(*key))
}

fn text(value: &Value) -> Option<&str> {
    value.as_str()
}

/// One value or a list of them, as IAM and SAM allow.
fn one_or_many(value: Option<&Value>) -> Vec<&Value> {
    match value {
        Some(Value::Sequence(items)) => items.iter().collect(),
        Some(value) => vec![value],
        None => vec![],
    }
}

/// What a reference points at, as this test names resources: `!Ref X`,
/// `!GetAtt X.Arn` and `!GetAtt X.Name` are `X`; another attribute is
/// `X.Attribute`; `!Sub` keeps its text with `${X.Arn}` read as `X`; a plain
/// string is itself.
fn resource_name(value: &Value) -> String {
    if let Some(s) = text(value) {
        return s.to_owned();
    }
    if let Some(name) = value.get("Ref").and_then(text) {
        return name.to_owned();
    }
    if let Some(Value::Sequence(parts)) = value.get("Fn::GetAtt") {
        let resource = parts.first().and_then(text).unwrap_or("?");
        return match parts.get(1).and_then(text) {
            Some("Arn" | "Name") => resource.to_owned(),
            Some(attribute) => format!("{resource}.{attribute}"),
            None => resource.to_owned(),
        };
    }
    if let Some(template) = value.get("Fn::Sub").and_then(text) {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').map_or(rest.len(), |e| start + e);
            let inner = &rest[start + 2..end];
            out.push_str(inner.strip_suffix(".Arn").unwrap_or(inner));
            rest = rest.get(end + 1..).unwrap_or("");
        }
        out.push_str(rest);
        return out;
    }
    format!("{value:?}")
}

/// A trigger of a function (an `Events` entry).
#[derive(Debug, Clone)]
struct Trigger {
    kind: String,
    /// `{stream}`, `{table}`, `{queue}`, `{on_failure}` → resource names.
    fields: BTreeMap<&'static str, String>,
}

/// A function of the template.
#[derive(Debug, Clone)]
struct Function {
    logical_id: String,
    binary: String,
    /// Environment variables → the resource name or literal they hold.
    env: BTreeMap<String, String>,
    role: String,
    log_group: Option<String>,
    triggers: Vec<Trigger>,
}

struct Template {
    resources: BTreeMap<String, Value>,
    functions: Vec<Function>,
}

impl Template {
    fn load() -> Self {
        let path = root().join("template.yaml");
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let document: Value =
            serde_yaml_ng::from_str(&source).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
        let document = long_form(document);
        let resources: BTreeMap<String, Value> = document
            .get("Resources")
            .and_then(Value::as_mapping)
            .expect("template.yaml has Resources")
            .iter()
            .map(|(k, v)| (k.as_str().expect("logical ids are strings").to_owned(), v.clone()))
            .collect();
        let global_env = at(&document, &["Globals", "Function", "Environment", "Variables"]).cloned();
        let functions = resources
            .iter()
            .filter(|(_, r)| r.get("Type").and_then(text) == Some("AWS::Serverless::Function"))
            .map(|(id, r)| Self::function(id, r, global_env.as_ref()))
            .collect();
        Self { resources, functions }
    }

    fn function(id: &str, resource: &Value, global_env: Option<&Value>) -> Function {
        let properties = resource
            .get("Properties")
            .unwrap_or_else(|| panic!("{id} has no Properties"));
        assert!(
            properties.get("Policies").is_none(),
            "{id} has SAM Policies: this test only reads explicit roles (Role: !GetAtt …Role.Arn)"
        );
        let binary = at(resource, &["Metadata", "BuildProperties", "Binary"])
            .and_then(text)
            .unwrap_or_else(|| panic!("{id} has no Metadata.BuildProperties.Binary"))
            .to_owned();
        let mut env = BTreeMap::new();
        for variables in [global_env, at(properties, &["Environment", "Variables"])]
            .into_iter()
            .flatten()
        {
            for (name, value) in variables.as_mapping().into_iter().flatten() {
                let name = name.as_str().expect("variable names are strings").to_owned();
                let value = match value {
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => resource_name(other),
                };
                env.insert(name, value);
            }
        }
        let role = properties
            .get("Role")
            .map(resource_name)
            .unwrap_or_else(|| panic!("{id} has no Role"));
        let log_group = at(properties, &["LoggingConfig", "LogGroup"]).map(resource_name);
        let mut triggers = Vec::new();
        for (name, event) in properties
            .get("Events")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
        {
            let kind = event.get("Type").and_then(text).unwrap_or("?").to_owned();
            let p = event
                .get("Properties")
                .unwrap_or_else(|| panic!("{id} event {name:?} has no Properties"));
            let mut fields = BTreeMap::new();
            match kind.as_str() {
                "DynamoDB" => {
                    let stream = p
                        .get("Stream")
                        .map(resource_name)
                        .expect("a DynamoDB trigger has a Stream");
                    let table = stream.split('.').next().unwrap_or_default().to_owned();
                    fields.insert("{stream}", stream);
                    fields.insert("{table}", table);
                    if let Some(dest) = at(p, &["DestinationConfig", "OnFailure", "Destination"]) {
                        fields.insert("{on_failure}", resource_name(dest));
                    }
                }
                "SQS" => {
                    fields.insert(
                        "{queue}",
                        p.get("Queue").map(resource_name).expect("an SQS trigger has a Queue"),
                    );
                }
                other => panic!("{id}: the drift test does not know trigger type {other}; teach trigger_grants"),
            }
            triggers.push(Trigger { kind, fields });
        }
        Function {
            logical_id: id.to_owned(),
            binary,
            env,
            role,
            log_group,
            triggers,
        }
    }

    fn resource(&self, id: &str) -> &Value {
        self.resources
            .get(id)
            .unwrap_or_else(|| panic!("template.yaml has no resource {id}"))
    }

    fn properties(&self, id: &str) -> &Value {
        self.resource(id)
            .get("Properties")
            .unwrap_or_else(|| panic!("{id} has no Properties"))
    }

    fn of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = (&'a String, &'a Value)> + 'a {
        self.resources
            .iter()
            .filter(move |(_, r)| r.get("Type").and_then(text) == Some(kind))
    }

    /// (action, resource) pairs a role allows: its inline policies and the
    /// customer-managed policies it attaches.
    fn grants(&self, role: &str) -> BTreeSet<(String, String)> {
        let properties = self.properties(role);
        let mut documents: Vec<&Value> = one_or_many(properties.get("Policies"))
            .into_iter()
            .map(|p| p.get("PolicyDocument").expect("an inline policy has a PolicyDocument"))
            .collect();
        for arn in one_or_many(properties.get("ManagedPolicyArns")) {
            let policy = resource_name(arn);
            let resource = self.resources.get(&policy).unwrap_or_else(|| {
                panic!("{role} attaches {policy}, which is not a policy of this template (an AWS managed policy cannot be checked)")
            });
            documents.push(at(resource, &["Properties", "PolicyDocument"]).expect("a managed policy has a document"));
        }
        let mut grants = BTreeSet::new();
        for statement in documents.into_iter().flat_map(|d| one_or_many(d.get("Statement"))) {
            for unsupported in ["NotAction", "NotResource"] {
                assert!(
                    statement.get(unsupported).is_none(),
                    "{role}: {unsupported} is not checked by this test"
                );
            }
            if statement.get("Effect").and_then(text) != Some("Allow") {
                continue;
            }
            for action in one_or_many(statement.get("Action")) {
                for resource in one_or_many(statement.get("Resource")) {
                    grants.insert((
                        text(action).expect("actions are strings").to_owned(),
                        resource_name(resource),
                    ));
                }
            }
        }
        grants
    }

    /// The resource an environment variable names, the same in every function that sets it.
    fn resource_of(&self, variable: &str) -> String {
        let tables: BTreeSet<&String> = self.functions.iter().filter_map(|f| f.env.get(variable)).collect();
        assert_eq!(
            tables.len(),
            1,
            "{variable} names one resource in every function that sets it, not {tables:?}"
        );
        tables.into_iter().next().expect("one table").clone()
    }
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(Template::load)
}

// ---------------------------------------------------------------------------
// The code: workspace crates, their functions, what each calls and reads.
// ---------------------------------------------------------------------------

/// A workspace crate under shared/ or functions/.
#[derive(Debug, Clone)]
struct Crate {
    name: String,
    dir: PathBuf,
    /// Workspace crates it depends on (normal dependencies).
    deps: Vec<String>,
    /// Its binaries (a `[[bin]]` name, or the package name for src/main.rs).
    binaries: Vec<String>,
}

/// The `[package] name`, `[[bin]] name`s and `[dependencies]` keys of a
/// manifest; enough TOML for the workspace's own, flat manifests.
fn read_manifest(dir: &Path) -> Crate {
    let path = dir.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let (mut section, mut name, mut deps, mut binaries) = (String::new(), None, Vec::new(), Vec::new());
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim().trim_matches('"'));
        match section.as_str() {
            "[package]" if key == "name" => name = Some(value.to_owned()),
            "[[bin]]" if key == "name" => binaries.push(value.to_owned()),
            "[dependencies]" => deps.push(key.split('.').next().unwrap_or(key).to_owned()),
            _ => {}
        }
    }
    let name = name.unwrap_or_else(|| panic!("{} has no [package] name", path.display()));
    if binaries.is_empty() && dir.join("src/main.rs").exists() {
        binaries.push(name.clone());
    }
    Crate {
        name,
        dir: dir.to_owned(),
        deps,
        binaries,
    }
}

fn crates() -> Vec<Crate> {
    let mut crates = Vec::new();
    for group in ["shared", "functions"] {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join(group))
            .unwrap_or_else(|e| panic!("list {group}/: {e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("Cargo.toml").exists())
            .collect();
        dirs.sort();
        crates.extend(dirs.iter().map(|d| read_manifest(d)));
    }
    crates
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// An SDK call (or a transaction item) in a function body.
#[derive(Debug, Clone)]
struct Call {
    /// `put_item`, or `Put` for a transaction item.
    operation: String,
    /// The IAM action, if the call has one of its own.
    action: Option<&'static str>,
    /// The `table_name` / `request_items` expression, "" if none.
    target: String,
    /// The `index_name` constant's value, if any.
    index: Option<String>,
}

/// A setting read: `settings.require(ENV_X)` or `settings.get(ENV_X)`.
#[derive(Debug, Clone)]
struct SettingRead {
    constant: String,
    required: bool,
    /// The projection constant of the `match` arm it is read in, if any.
    projection: Option<String>,
}

/// What a body refers to, to be resolved against the index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Reference {
    /// `self.name(…)`.
    OwnMethod(String),
    /// `value.name(…)` on anything else.
    Method(String),
    /// `Qualifier::name` (`Self` already replaced by the impl's type).
    Path(String, String),
    /// `name` alone.
    Free(String),
}

/// One function or method of the scanned crates.
#[derive(Debug, Clone, Default)]
struct FnInfo {
    crate_name: String,
    file: String,
    /// The impl's self type or the trait's name; `None` for a free function.
    owner: Option<String>,
    /// A trait's default method (reachable on whatever implements it).
    trait_default: bool,
    /// Callable by name on any value: public, or a trait's method. A
    /// private method is callable so only from its own file (its module).
    by_name: bool,
    name: String,
    calls: Vec<Call>,
    reads: Vec<SettingRead>,
    /// `ENV_*` constants used otherwise than in a read.
    other_env: Vec<String>,
    /// SDK calls inside a macro, which this scanner cannot attribute.
    in_macros: Vec<String>,
    /// What it refers to, each with the projection constant of the `match`
    /// arm it is made in, if any (as [`SettingRead::projection`]).
    references: BTreeSet<(Reference, Option<String>)>,
}

impl FnInfo {
    fn key(&self) -> String {
        match &self.owner {
            Some(owner) => format!("{owner}::{}", self.name),
            None => self.name.clone(),
        }
    }
}

fn sdk_action(name: &str) -> Option<Option<&'static str>> {
    SDK_OPERATIONS.iter().find(|(op, _)| *op == name).map(|(_, a)| *a)
}

fn last_ident(path: &syn::Path) -> String {
    path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default()
}

/// `&self.config.events_table` → `self.config.events_table`.
fn expr_text(expr: &syn::Expr) -> String {
    match expr {
        syn::Expr::Reference(r) => expr_text(&r.expr),
        syn::Expr::Paren(p) => expr_text(&p.expr),
        syn::Expr::Field(f) => {
            let member = match &f.member {
                syn::Member::Named(ident) => ident.to_string(),
                syn::Member::Unnamed(index) => index.index.to_string(),
            };
            format!("{}.{member}", expr_text(&f.base))
        }
        syn::Expr::Path(p) => p
            .path
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect::<Vec<_>>()
            .join("::"),
        syn::Expr::MethodCall(m) => format!("{}.{}()", expr_text(&m.receiver), m.method),
        _ => "<expr>".to_owned(),
    }
}

fn is_self(expr: &syn::Expr) -> bool {
    matches!(expr, syn::Expr::Path(p) if p.path.is_ident("self"))
}

fn env_constant(expr: &syn::Expr) -> Option<String> {
    match expr {
        syn::Expr::Path(p) => Some(last_ident(&p.path)).filter(|n| n.starts_with("ENV_")),
        syn::Expr::Reference(r) => env_constant(&r.expr),
        _ => None,
    }
}

fn constant_value(table: &[(&str, &str)], name: &str) -> Option<String> {
    table.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
}

/// Collects what one body calls, reads and refers to.
struct BodyScan<'a> {
    owner: Option<&'a str>,
    info: &'a mut FnInfo,
    projection_arm: Vec<String>,
}

impl BodyScan<'_> {
    fn refer(&mut self, reference: Reference) {
        let arm = self.projection_arm.last().cloned();
        self.info.references.insert((reference, arm));
    }

    fn call_from_chain(&mut self, operation: String, action: Option<&'static str>, later: &[&syn::ExprMethodCall]) {
        let mut target = String::new();
        let mut index = None;
        for link in later {
            match link.method.to_string().as_str() {
                "table_name" | "request_items" if target.is_empty() => {
                    target = link.args.first().map(expr_text).unwrap_or_default();
                }
                "index_name" => {
                    let name = link.args.first().map(expr_text).unwrap_or_default();
                    let name = name.rsplit("::").next().unwrap_or_default().to_owned();
                    index = Some(constant_value(INDEX_CONSTANTS, &name).unwrap_or_else(|| {
                        panic!(
                            "index_name({name}) in {}: add the constant to INDEX_CONSTANTS",
                            self.info.key()
                        )
                    }));
                }
                _ => {}
            }
        }
        self.info.calls.push(Call {
            operation,
            action,
            target,
            index,
        });
    }
}

impl<'ast> Visit<'ast> for BodyScan<'_> {
    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        // Flatten `base.a(..).b(..).c(..)` into [a, b, c] (innermost first),
        // so a call and the `table_name` that follows it are seen together.
        let mut links = vec![call];
        let mut base = &*call.receiver;
        while let syn::Expr::MethodCall(inner) = base {
            links.push(inner);
            base = &inner.receiver;
        }
        links.reverse();
        // After an SDK call or a builder, the chain is the SDK's own
        // methods (`transact_items`, `send`, …): never ours, though a name
        // may be the same.
        let mut sdk_chain = false;
        // A transaction item: `Put::builder().table_name(..)…`.
        if let syn::Expr::Call(c) = base
            && let syn::Expr::Path(p) = &*c.func
            && p.path.segments.len() >= 2
            && last_ident(&p.path) == "builder"
        {
            sdk_chain = true;
            let kind = p.path.segments[p.path.segments.len() - 2].ident.to_string();
            if let Some((_, action)) = TRANSACT_ITEMS.iter().find(|(k, _)| *k == kind) {
                self.call_from_chain(kind, Some(action), &links);
            }
        }
        for (i, link) in links.iter().enumerate() {
            let name = link.method.to_string();
            // A setting read: `settings.require(ENV_X)` / `settings.get(ENV_X)`.
            let read = (matches!(name.as_str(), "require" | "get") && link.args.len() == 1)
                .then(|| link.args.first().and_then(env_constant))
                .flatten();
            if link.args.is_empty()
                && let Some(action) = sdk_action(&name)
            {
                sdk_chain = true;
                self.call_from_chain(name.clone(), action, &links[i + 1..]);
            } else if !sdk_chain && read.is_none() {
                let reference = if i == 0 && is_self(base) {
                    Reference::OwnMethod(name.clone())
                } else {
                    Reference::Method(name.clone())
                };
                self.refer(reference);
            }
            match read {
                Some(constant) => self.info.reads.push(SettingRead {
                    constant,
                    required: name == "require",
                    projection: self.projection_arm.last().cloned(),
                }),
                None => link.args.iter().for_each(|arg| self.visit_expr(arg)),
            }
        }
        self.visit_expr(base);
    }

    fn visit_expr_path(&mut self, expr: &'ast syn::ExprPath) {
        let segments: Vec<String> = expr.path.segments.iter().map(|s| s.ident.to_string()).collect();
        match segments.as_slice() {
            [one] if one == "self" => {}
            [one] if one.starts_with("ENV_") => self.info.other_env.push(one.clone()),
            [one] => {
                self.refer(Reference::Free(one.clone()));
            }
            [.., qualifier, name] => {
                if name.starts_with("ENV_") {
                    self.info.other_env.push(name.clone());
                }
                let qualifier = match (qualifier.as_str(), self.owner) {
                    ("Self", Some(owner)) => owner.to_owned(),
                    _ => qualifier.clone(),
                };
                self.refer(Reference::Path(qualifier, name.clone()));
            }
            [] => {}
        }
    }

    fn visit_expr_match(&mut self, expr: &'ast syn::ExprMatch) {
        self.visit_expr(&expr.expr);
        for arm in &expr.arms {
            let projection = match &arm.pat {
                syn::Pat::Path(p) => {
                    Some(last_ident(&p.path)).filter(|n| constant_value(PROJECTION_CONSTANTS, n).is_some())
                }
                _ => None,
            };
            if let Some(projection) = &projection {
                self.projection_arm.push(projection.clone());
            }
            if let Some((_, guard)) = &arm.guard {
                self.visit_expr(guard);
            }
            self.visit_expr(&arm.body);
            if projection.is_some() {
                self.projection_arm.pop();
            }
        }
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        let tokens = mac.tokens.to_string();
        for (operation, _) in SDK_OPERATIONS {
            if tokens.contains(&format!(". {operation} ()")) {
                self.info.in_macros.push((*operation).to_owned());
            }
        }
    }

    // Nested items are scanned as items of their own, not as this body.
    fn visit_item(&mut self, _item: &'ast syn::Item) {}
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta
                .require_list()
                .is_ok_and(|l| l.tokens.to_string().trim() == "test")
    })
}

fn scan_block(owner: Option<&str>, base: &FnInfo, name: String, block: &syn::Block, out: &mut Vec<FnInfo>) {
    let mut info = FnInfo {
        owner: owner.map(str::to_owned),
        name,
        ..base.clone()
    };
    info.by_name |= info.trait_default;
    let mut scan = BodyScan {
        owner,
        info: &mut info,
        projection_arm: Vec::new(),
    };
    scan.visit_block(block);
    out.push(info);
}

fn type_name(ty: &syn::Type) -> Option<String> {
    match ty {
        syn::Type::Path(p) => Some(last_ident(&p.path)),
        syn::Type::Reference(r) => type_name(&r.elem),
        _ => None,
    }
}

fn scan_items(items: &[syn::Item], base: &FnInfo, out: &mut Vec<FnInfo>) {
    for item in items {
        match item {
            syn::Item::Fn(f) if !is_test_only(&f.attrs) => {
                scan_block(None, base, f.sig.ident.to_string(), &f.block, out)
            }
            syn::Item::Impl(i) if !is_test_only(&i.attrs) => {
                let Some(owner) = type_name(&i.self_ty) else { continue };
                for item in &i.items {
                    if let syn::ImplItem::Fn(f) = item {
                        let base = FnInfo {
                            by_name: i.trait_.is_some() || !matches!(f.vis, syn::Visibility::Inherited),
                            ..base.clone()
                        };
                        scan_block(Some(&owner), &base, f.sig.ident.to_string(), &f.block, out);
                    }
                }
            }
            syn::Item::Trait(t) => {
                let owner = t.ident.to_string();
                let base = FnInfo {
                    trait_default: true,
                    ..base.clone()
                };
                for item in &t.items {
                    if let syn::TraitItem::Fn(f) = item
                        && let Some(block) = &f.default
                    {
                        scan_block(Some(&owner), &base, f.sig.ident.to_string(), block, out);
                    }
                }
            }
            syn::Item::Mod(m) if !is_test_only(&m.attrs) => {
                if let Some((_, items)) = &m.content {
                    scan_items(items, base, out);
                }
            }
            _ => {}
        }
    }
}

/// Every function of the workspace crates under shared/ and functions/.
struct Code {
    crates: Vec<Crate>,
    fns: Vec<FnInfo>,
}

impl Code {
    fn load() -> Self {
        let crates = crates();
        let mut fns = Vec::new();
        for krate in &crates {
            let mut files = Vec::new();
            rust_files(&krate.dir.join("src"), &mut files);
            for file in files {
                let source = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
                let parsed = syn::parse_file(&source).unwrap_or_else(|e| panic!("parse {}: {e}", file.display()));
                let relative = file.strip_prefix(root()).unwrap_or(&file).display().to_string();
                let base = FnInfo {
                    crate_name: krate.name.clone(),
                    file: relative,
                    ..FnInfo::default()
                };
                scan_items(&parsed.items, &base, &mut fns);
            }
        }
        Self { crates, fns }
    }

    fn krate(&self, name: &str) -> Option<&Crate> {
        self.crates.iter().find(|c| c.name == name)
    }

    /// The crate that builds `binary` under functions/.
    fn crate_of_binary(&self, binary: &str) -> Option<&Crate> {
        self.crates
            .iter()
            .find(|c| c.dir.starts_with(root().join("functions")) && c.binaries.iter().any(|b| b == binary))
    }

    /// `name` and the workspace crates it depends on, transitively.
    fn linked(&self, name: &str) -> BTreeSet<String> {
        let mut linked = BTreeSet::new();
        let mut todo = vec![name.to_owned()];
        while let Some(next) = todo.pop() {
            if let Some(krate) = self.krate(&next)
                && linked.insert(next)
            {
                todo.extend(krate.deps.iter().cloned());
            }
        }
        linked
    }

    /// What a binary's `main` reaches when it runs as a function whose
    /// `TALLY_PROJECTION` is `projection` (`None`: no projector), each
    /// function with the path it was first reached by (breadth first, so the
    /// path is a shortest one).
    ///
    /// `Type::f` and `Self::f` resolve to that function and put `Type` in
    /// scope; `self.m()` to the same impl's `m`; `value.m()` to the public
    /// or trait method `m` of every type in scope, or a private one of the
    /// caller's file (Rust's privacy is the module's: `self.tables.store()`
    /// calls a sibling type's private method); trait objects and generics
    /// are resolved by name: the workspace's ports are few. A bare `f`
    /// resolves to free functions.
    ///
    /// A reference made in the `match` arm of another projection
    /// (`views::SALES_BY_DAY => Self::sales_by_day(…)` in the order
    /// summary's projector) is that projection's code: it is followed, but
    /// what only it reaches is marked as not run by this function (and the
    /// types it names are in scope for that code only).
    fn reach(&self, krate: &Crate, projection: Option<&str>) -> Reach<'_> {
        let linked = self.linked(&krate.name);
        let fns: Vec<&FnInfo> = self.fns.iter().filter(|f| linked.contains(&f.crate_name)).collect();
        let main = fns
            .iter()
            .position(|f| f.crate_name == krate.name && f.owner.is_none() && f.name == "main")
            .unwrap_or_else(|| panic!("{} has no fn main", krate.name));
        let owners: BTreeSet<&str> = fns.iter().filter_map(|f| f.owner.as_deref()).collect();
        let runs_arm = |arm: &Option<String>| match (arm, projection) {
            (Some(arm), Some(chosen)) => constant_value(PROJECTION_CONSTANTS, arm).as_deref() == Some(chosen),
            _ => true,
        };
        // A state is a function and whether this function runs it.
        let mut order: Vec<(usize, bool)> = vec![(main, true)];
        let mut from_of: BTreeMap<(usize, bool), Option<(usize, bool)>> = BTreeMap::from([((main, true), None)]);
        // The types in scope on the paths this function runs, and on any path.
        let (mut in_scope_run, mut in_scope_any): (BTreeSet<String>, BTreeSet<String>) = Default::default();
        loop {
            let before = (order.len(), in_scope_run.len(), in_scope_any.len());
            let mut next = 0;
            while next < order.len() {
                let (index, runs) = order[next];
                next += 1;
                let from = fns[index];
                for (reference, arm) in &from.references {
                    let runs = runs && runs_arm(arm);
                    let in_scope = if runs { &in_scope_run } else { &in_scope_any };
                    let matching = |pick: &dyn Fn(&FnInfo) -> bool| -> Vec<usize> {
                        (0..fns.len()).filter(|&i| pick(fns[i])).collect()
                    };
                    let found: Vec<usize> = match reference {
                        Reference::OwnMethod(name) => {
                            let own = matching(&|f| f.owner == from.owner && &f.name == name);
                            if own.is_empty() {
                                matching(&|f| f.trait_default && &f.name == name)
                            } else {
                                own
                            }
                        }
                        Reference::Method(name) => matching(&|f| {
                            &f.name == name
                                && (f.by_name || f.file == from.file)
                                && (f.trait_default || f.owner.as_ref().is_some_and(|o| in_scope.contains(o)))
                        }),
                        Reference::Path(qualifier, name) if owners.contains(qualifier.as_str()) => {
                            if runs {
                                in_scope_run.insert(qualifier.clone());
                            }
                            in_scope_any.insert(qualifier.clone());
                            matching(&|f| f.owner.as_ref() == Some(qualifier) && &f.name == name)
                        }
                        Reference::Path(_, name) | Reference::Free(name) => {
                            matching(&|f| f.owner.is_none() && &f.name == name)
                        }
                    };
                    for i in found {
                        if let Entry::Vacant(entry) = from_of.entry((i, runs)) {
                            entry.insert(Some((index, runs)));
                            order.push((i, runs));
                        }
                    }
                }
            }
            if (order.len(), in_scope_run.len(), in_scope_any.len()) == before {
                break;
            }
        }
        let path = |mut state: (usize, bool)| {
            let mut names = vec![fns[state.0].key()];
            while let Some(Some(from)) = from_of.get(&state) {
                names.push(fns[from.0].key());
                state = *from;
            }
            names.reverse();
            names.join(" → ")
        };
        let run: BTreeSet<usize> = order.iter().filter(|(_, runs)| *runs).map(|(i, _)| *i).collect();
        Reach {
            fns: order
                .iter()
                .filter(|&&(i, runs)| runs || !run.contains(&i))
                .map(|&(i, runs)| Reached {
                    info: fns[i],
                    via: path((i, runs)),
                    runs,
                })
                .collect(),
        }
    }
}

/// The functions a binary reaches.
struct Reach<'a> {
    fns: Vec<Reached<'a>>,
}

/// A function a binary reaches.
struct Reached<'a> {
    info: &'a FnInfo,
    /// A call path from `main`.
    via: String,
    /// Whether the deployed function runs it: false when only another
    /// projection's `match` arm reaches it.
    runs: bool,
}

fn code() -> &'static Code {
    static CODE: OnceLock<Code> = OnceLock::new();
    CODE.get_or_init(Code::load)
}

// ---------------------------------------------------------------------------
// What each deployed function needs.
// ---------------------------------------------------------------------------

fn env_value(constant: &str, site: &str) -> String {
    constant_value(ENV_CONSTANTS, constant)
        .unwrap_or_else(|| panic!("{site} reads {constant}, which ENV_CONSTANTS does not list: add it"))
}

/// The settings a function's code reads.
struct SettingsRead {
    /// Variable → (required, the function that reads it).
    reads: BTreeMap<String, (bool, String)>,
    /// Variables read only for another projection than the function's own
    /// (in a `match` arm of another `TALLY_PROJECTION`, or in code only such
    /// an arm reaches): the code paths that use them are that projection's,
    /// never run by this function.
    other_projections: BTreeSet<String>,
}

fn settings_read(function: &Function) -> SettingsRead {
    let code = code();
    let krate = code
        .crate_of_binary(&function.binary)
        .unwrap_or_else(|| panic!("no crate under functions/ builds {}", function.binary));
    let projection = function.env.get(ENV_PROJECTION);
    let mut reads: BTreeMap<String, (bool, String)> = BTreeMap::new();
    let mut unselected = BTreeSet::new();
    for Reached { info: f, runs, .. } in code.reach(krate, projection.map(String::as_str)).fns {
        for read in &f.reads {
            let variable = env_value(&read.constant, &f.key());
            let selected = runs
                && match (&read.projection, projection) {
                    (Some(arm), Some(chosen)) => constant_value(PROJECTION_CONSTANTS, arm).as_ref() == Some(chosen),
                    _ => true,
                };
            if !selected {
                unselected.insert(variable);
                continue;
            }
            let entry = reads.entry(variable).or_insert((false, f.key()));
            if read.required && !entry.0 {
                *entry = (true, f.key());
            }
        }
    }
    let other_projections = unselected.into_iter().filter(|v| !reads.contains_key(v)).collect();
    SettingsRead {
        reads,
        other_projections,
    }
}

/// A needed grant and the call site that needs it.
#[derive(Debug)]
struct Need {
    action: String,
    resource: String,
    because: String,
}

/// (action, resource) pairs `function`'s code needs.
fn needed_grants(function: &Function) -> Vec<Need> {
    let code = code();
    let krate = code
        .crate_of_binary(&function.binary)
        .unwrap_or_else(|| panic!("no crate under functions/ builds {}", function.binary));
    let other_projections = settings_read(function).other_projections;
    let projection = function.env.get(ENV_PROJECTION).map(String::as_str);
    let mut needs = Vec::new();
    for Reached { info: f, via, runs } in code.reach(krate, projection).fns {
        let key = f.key();
        assert!(
            f.in_macros.is_empty(),
            "{key} ({}) calls {:?} inside a macro, which this test cannot attribute: call it outside the macro",
            f.file,
            f.in_macros
        );
        // Only another projection's `match` arm reaches it: never run here.
        if !runs {
            continue;
        }
        let settings_of = |call: &Call| -> &[&str] {
            TARGETS
                .iter()
                .find(|(k, t, _, _)| *k == key && *t == call.target)
                .map(|(_, _, settings, _)| *settings)
                .unwrap_or_else(|| panic!("{key}: no TARGETS entry for {} on `{}`", call.operation, call.target))
        };
        // A function that works on another projection's table is that
        // projection's code (the sink's model is chosen by TALLY_PROJECTION).
        let other_projection = f.calls.iter().filter(|c| c.action.is_some()).any(|c| {
            let settings = settings_of(c);
            !settings.is_empty() && settings.iter().all(|s| other_projections.contains(*s))
        });
        if other_projection {
            continue;
        }
        for call in &f.calls {
            let Some(action) = call.action else { continue };
            let settings = settings_of(call);
            assert!(
                !settings.is_empty(),
                "{} (binary {}) reaches {key} ({via}), which TARGETS says no Lambda may reach",
                function.logical_id,
                function.binary
            );
            let resources: Vec<&String> = settings.iter().filter_map(|s| function.env.get(*s)).collect();
            assert!(
                !resources.is_empty(),
                "{} reaches {key} ({via}), which calls {action} on the resource in one of {settings:?}, \
                 but the function's environment sets none of them",
                function.logical_id
            );
            for resource in resources {
                let resource = match &call.index {
                    Some(index) => format!("{resource}/index/{index}"),
                    None => resource.clone(),
                };
                needs.push(Need {
                    action: action.to_owned(),
                    resource,
                    because: format!("{key} ({}) calls {}, reached by {via}", f.file, call.operation),
                });
            }
        }
    }
    needs
}

/// Grants allowed beyond the code's needs for `function`, with the reason.
fn allowed_extras(function: &Function) -> BTreeMap<(String, String), String> {
    let mut allowed = BTreeMap::new();
    for (action, resource, why) in PLATFORM_GRANTS {
        let resource = match (*resource, &function.log_group) {
            ("{log_group}", Some(group)) => group.clone(),
            ("{log_group}", None) => continue,
            (other, _) => other.to_owned(),
        };
        allowed.insert(((*action).to_owned(), resource), (*why).to_owned());
    }
    for trigger in &function.triggers {
        for (kind, action, resource, why) in TRIGGER_GRANTS {
            if *kind != trigger.kind {
                continue;
            }
            let mut resource = (*resource).to_owned();
            for (placeholder, value) in &trigger.fields {
                resource = resource.replace(placeholder, value);
            }
            if !resource.contains('{') {
                allowed.insert(((*action).to_owned(), resource), (*why).to_owned());
            }
        }
    }
    allowed
}

// ---------------------------------------------------------------------------
// The checks.
// ---------------------------------------------------------------------------

/// Every function of the template builds a binary of a crate under
/// functions/, and every such crate is deployed by at least one function.
#[test]
fn every_function_deploys_a_crate_and_every_crate_is_deployed() {
    let (template, code) = (template(), code());
    let mut problems = Vec::new();
    for function in &template.functions {
        match code.crate_of_binary(&function.binary) {
            Some(krate) => {
                let members = std::fs::read_to_string(root().join("Cargo.toml")).expect("read Cargo.toml");
                let member = krate
                    .dir
                    .strip_prefix(root())
                    .unwrap_or(&krate.dir)
                    .display()
                    .to_string();
                if !members.contains(&format!("\"{member}\"")) {
                    problems.push(format!(
                        "{}: crate {member} is not a workspace member",
                        function.logical_id
                    ));
                }
            }
            None => problems.push(format!(
                "{}: Metadata.BuildProperties.Binary {:?} is no binary of a crate under functions/",
                function.logical_id, function.binary
            )),
        }
        let build = at(template.resource(&function.logical_id), &["Metadata", "BuildMethod"]).and_then(text);
        if build != Some("rust-cargolambda") {
            problems.push(format!(
                "{}: BuildMethod is {build:?}, not rust-cargolambda",
                function.logical_id
            ));
        }
    }
    for krate in code
        .crates
        .iter()
        .filter(|c| c.dir.starts_with(root().join("functions")))
    {
        if !template.functions.iter().any(|f| krate.binaries.contains(&f.binary)) {
            problems.push(format!(
                "crate {} (functions/) is deployed by no function of template.yaml (binaries {:?})",
                krate.name, krate.binaries
            ));
        }
        match TRIGGERS.iter().find(|(b, _)| krate.binaries.iter().any(|x| x == b)) {
            None => problems.push(format!(
                "crate {}: say which triggers it is built for in TRIGGERS",
                krate.name
            )),
            Some((binary, kinds)) => {
                for function in template.functions.iter().filter(|f| &f.binary == binary) {
                    let got: Vec<&str> = function.triggers.iter().map(|t| t.kind.as_str()).collect();
                    if got != *kinds {
                        problems.push(format!(
                            "{} (binary {binary}) has triggers {got:?}; its code is built for {kinds:?}",
                            function.logical_id
                        ));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "template.yaml and functions/ drifted:\n  {}",
        problems.join("\n  ")
    );
}

/// Every setting a function's code requires is in its environment, every
/// `TALLY_*` variable the template sets is read by the code, and a
/// projector's `TALLY_PROJECTION` names one of the domain's projections.
#[test]
fn every_setting_the_code_reads_is_set() {
    let template = template();
    let mut problems = Vec::new();
    let mut report = String::new();
    for function in &template.functions {
        let reads = settings_read(function).reads;
        let _ = writeln!(report, "{} ({}):", function.logical_id, function.binary);
        for (variable, (required, site)) in &reads {
            let kind = if *required { "required" } else { "optional" };
            let _ = writeln!(report, "  {variable:28} {kind:8} read in {site}");
            if *required && !function.env.contains_key(variable) {
                problems.push(format!(
                    "{}: the code requires {variable} ({site}) but template.yaml does not set it",
                    function.logical_id
                ));
            }
        }
        for variable in function.env.keys().filter(|v| v.starts_with("TALLY_")) {
            if !reads.contains_key(variable) {
                problems.push(format!(
                    "{}: template.yaml sets {variable}, which the code never reads",
                    function.logical_id
                ));
            }
        }
        if let Some(projection) = function.env.get(ENV_PROJECTION)
            && !PROJECTIONS.contains(&projection.as_str())
        {
            problems.push(format!(
                "{}: {ENV_PROJECTION}={projection:?} names no projection of tally_domain::views::PROJECTIONS {PROJECTIONS:?}",
                function.logical_id
            ));
        }
    }
    // Every projection has exactly one projector.
    for projection in PROJECTIONS {
        let projectors: Vec<&str> = template
            .functions
            .iter()
            .filter(|f| f.env.get(ENV_PROJECTION).map(String::as_str) == Some(projection))
            .map(|f| f.logical_id.as_str())
            .collect();
        if projectors.len() != 1 {
            problems.push(format!(
                "projection {projection} has projectors {projectors:?}, not exactly one"
            ));
        }
    }
    // An ENV_* constant used other than in a read is a read this test misses.
    for f in &code().fns {
        for constant in &f.other_env {
            problems.push(format!(
                "{} ({}) uses {constant} other than in settings.require/get: this test cannot tell if it is read",
                f.key(),
                f.file
            ));
        }
    }
    eprintln!("settings each function's code reads:\n{report}");
    assert!(
        problems.is_empty(),
        "template.yaml and the code's settings drifted:\n  {}",
        problems.join("\n  ")
    );
}

/// Every AWS action a function's code calls is granted on the resource it
/// calls it on, and its role grants nothing beyond that, its logs and
/// traces, and what its event source mapping does for it.
#[test]
fn every_aws_call_is_granted_and_nothing_more() {
    let template = template();
    let mut problems = Vec::new();
    let mut report = String::new();
    for function in &template.functions {
        let granted = template.grants(&function.role);
        let needs = needed_grants(function);
        let allowed = allowed_extras(function);
        let _ = writeln!(
            report,
            "{} ({}, role {}):",
            function.logical_id, function.binary, function.role
        );
        let mut needed: BTreeSet<(String, String)> = BTreeSet::new();
        for need in &needs {
            let pair = (need.action.clone(), need.resource.clone());
            if needed.insert(pair.clone()) {
                let _ = writeln!(report, "  needs {} on {}: {}", need.action, need.resource, need.because);
            }
            if !granted.contains(&pair) {
                problems.push(format!(
                    "{}: {} is not granted {} on {} — needed because {}",
                    function.logical_id, function.role, need.action, need.resource, need.because
                ));
            }
        }
        for pair in &granted {
            if needed.contains(pair) {
                continue;
            }
            match allowed.get(pair) {
                Some(why) => {
                    let _ = writeln!(report, "  allows {} on {}: {why}", pair.0, pair.1);
                }
                None => problems.push(format!(
                    "{}: {} grants {} on {}, which no code of {} calls and no allowance lists",
                    function.logical_id, function.role, pair.0, pair.1, function.binary
                )),
            }
        }
    }
    eprintln!("grants each function needs:\n{report}");
    assert!(
        problems.is_empty(),
        "template.yaml's IAM and the code drifted:\n  {}",
        problems.join("\n  ")
    );
}

/// Every SDK call site of the scanned crates has a [`TARGETS`] entry, and
/// every entry still names a call site.
#[test]
fn every_sdk_call_site_names_its_resource() {
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for f in &code().fns {
        for call in f.calls.iter().filter(|c| c.action.is_some()) {
            let key = f.key();
            match TARGETS.iter().position(|(k, t, _, _)| *k == key && *t == call.target) {
                Some(i) => {
                    used.insert(i);
                }
                None => problems.push(format!(
                    "{key} ({}) calls {} on `{}`: add a TARGETS entry saying which setting names that resource",
                    f.file, call.operation, call.target
                )),
            }
        }
        if !f.in_macros.is_empty() {
            problems.push(format!(
                "{} ({}) calls {:?} inside a macro",
                f.key(),
                f.file,
                f.in_macros
            ));
        }
    }
    for (i, (key, target, _, _)) in TARGETS.iter().enumerate() {
        if !used.contains(&i) {
            problems.push(format!(
                "TARGETS names {key} on `{target}`, which no longer calls AWS there"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "TARGETS and the code drifted:\n  {}",
        problems.join("\n  ")
    );
}

/// The bus rules match what the publisher sends (its `source`, and the
/// order streams' subject prefix), each feeds a queue that triggers the
/// projector of one projection, and every projector is fed by a rule.
#[test]
fn bus_rules_match_what_the_publisher_sends() {
    let template = template();
    let mut problems = Vec::new();
    let order_prefix = format!("{}-", Order::CATEGORY);
    let mut fed = BTreeSet::new();
    let bus = template.resource_of(ENV_EVENT_BUS);
    for (id, rule) in template.of_type("AWS::Events::Rule") {
        let p = rule.get("Properties").expect("a rule has Properties");
        if p.get("EventBusName").map(resource_name).as_ref() != Some(&bus) {
            problems.push(format!("{id} is not on the bus the publisher puts to ({bus})"));
        }
        let sources: Vec<&str> = one_or_many(at(p, &["EventPattern", "source"]))
            .into_iter()
            .filter_map(text)
            .collect();
        if sources != [EVENT_SOURCE] {
            problems.push(format!(
                "{id}: EventPattern source {sources:?}, but the publisher sends {EVENT_SOURCE:?}"
            ));
        }
        let prefixes: Vec<&str> = one_or_many(at(p, &["EventPattern", "detail", "subject"]))
            .into_iter()
            .filter_map(|s| s.get("prefix").and_then(text))
            .collect();
        if prefixes != [order_prefix.as_str()] {
            problems.push(format!(
                "{id}: detail.subject prefixes {prefixes:?}, but the projections follow the {order_prefix:?} streams"
            ));
        }
        for target in one_or_many(p.get("Targets")) {
            let queue = target.get("Arn").map(resource_name).unwrap_or_default();
            let projectors: Vec<&Function> = template
                .functions
                .iter()
                .filter(|f| f.triggers.iter().any(|t| t.fields.get("{queue}") == Some(&queue)))
                .collect();
            match projectors.as_slice() {
                [f] if f.env.contains_key(ENV_PROJECTION) => {
                    fed.insert(f.logical_id.clone());
                }
                _ => problems.push(format!(
                    "{id} targets {queue}, which triggers {:?}, not one projector",
                    projectors.iter().map(|f| &f.logical_id).collect::<Vec<_>>()
                )),
            }
        }
    }
    for f in template.functions.iter().filter(|f| f.env.contains_key(ENV_PROJECTION)) {
        if !fed.contains(&f.logical_id) {
            problems.push(format!("{} is fed by no bus rule", f.logical_id));
        }
    }
    assert!(
        problems.is_empty(),
        "the bus rules and the code drifted:\n  {}",
        problems.join("\n  ")
    );
}

/// Every queue a projector consumes redrives to a dead-letter queue after a
/// bounded number of receives, and the stream mapping parks failed batches.
#[test]
fn queues_redrive_to_dead_letter_queues() {
    let template = template();
    let mut problems = Vec::new();
    for function in &template.functions {
        for trigger in &function.triggers {
            match trigger.kind.as_str() {
                "SQS" => {
                    let queue = &trigger.fields["{queue}"];
                    let redrive = template.properties(queue).get("RedrivePolicy");
                    let count = redrive.and_then(|r| r.get("maxReceiveCount")).and_then(Value::as_u64);
                    let dlq = redrive.and_then(|r| r.get("deadLetterTargetArn")).map(resource_name);
                    if count.is_none_or(|c| c < 1) {
                        problems.push(format!(
                            "{queue} (feeds {}) sets no maxReceiveCount",
                            function.logical_id
                        ));
                    }
                    match dlq {
                        Some(dlq) if template.resource(&dlq).get("Type").and_then(text) == Some("AWS::SQS::Queue") => {}
                        other => problems.push(format!("{queue} redrives to {other:?}, not a queue of the template")),
                    }
                }
                "DynamoDB" if !trigger.fields.contains_key("{on_failure}") => {
                    problems.push(format!(
                        "{}: the stream mapping has no on-failure destination",
                        function.logical_id
                    ));
                }
                _ => {}
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dead-letter settings drifted:\n  {}",
        problems.join("\n  ")
    );
}

fn key_schema(table: &Value) -> Vec<(String, String)> {
    one_or_many(table.get("KeySchema"))
        .into_iter()
        .map(|k| {
            (
                k.get("AttributeName").and_then(text).unwrap_or("?").to_owned(),
                k.get("KeyType").and_then(text).unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

fn attribute_type(table: &Value, name: &str) -> Option<String> {
    one_or_many(table.get("AttributeDefinitions"))
        .into_iter()
        .find(|a| a.get("AttributeName").and_then(text) == Some(name))
        .and_then(|a| a.get("AttributeType").and_then(text))
        .map(str::to_owned)
}

/// The tables' keys, the idempotency TTL and the customer index are the
/// names `tally_store_dynamodb::schema` gives them, both slots (blue and
/// green) of an eventual read model alike, and every table setting names a
/// table of its own.
#[test]
fn table_keys_match_the_schema_constants() {
    let template = template();
    let mut problems = Vec::new();
    let hash = |name: &str| vec![(name.to_owned(), "HASH".to_owned())];
    let mut expect = |variable: &str, keys: Vec<(String, String)>, types: &[(&str, &str)]| {
        let id = template.resource_of(variable);
        let table = template.properties(&id);
        if key_schema(table) != keys {
            problems.push(format!(
                "{id} ({variable}) is keyed {:?}; the code uses {keys:?}",
                key_schema(table)
            ));
        }
        for (attribute, kind) in types {
            if attribute_type(table, attribute).as_deref() != Some(*kind) {
                problems.push(format!("{id}: attribute {attribute} is not of type {kind}"));
            }
        }
        (id, table)
    };
    let (events, events_table) = expect(
        ENV_EVENTS_TABLE,
        vec![
            (EVENTS_PK.to_owned(), "HASH".to_owned()),
            (EVENTS_SK.to_owned(), "RANGE".to_owned()),
        ],
        &[(EVENTS_PK, "S"), (EVENTS_SK, "N")],
    );
    let view = at(events_table, &["StreamSpecification", "StreamViewType"]).and_then(text);
    let (_, idempotency) = expect(ENV_IDEMPOTENCY_TABLE, hash(IDEMPOTENCY_PK), &[(IDEMPOTENCY_PK, "S")]);
    let ttl = at(idempotency, &["TimeToLiveSpecification", "AttributeName"]).and_then(text);
    let ttl_on = at(idempotency, &["TimeToLiveSpecification", "Enabled"]).and_then(Value::as_bool);
    for variable in [
        ENV_INVENTORY_TABLE,
        ENV_SALES_TABLE,
        ENV_SALES_GREEN_TABLE,
        ENV_CHECKPOINTS_TABLE,
    ] {
        expect(variable, hash(READ_PK), &[(READ_PK, "S")]);
    }
    let want_index = vec![
        (CUSTOMER_ID.to_owned(), "HASH".to_owned()),
        (PLACED_KEY.to_owned(), "RANGE".to_owned()),
    ];
    let mut indexes = Vec::new();
    for variable in [ENV_ORDER_SUMMARY_TABLE, ENV_ORDER_SUMMARY_GREEN_TABLE] {
        let (summary, summary_table) = expect(
            variable,
            hash(READ_PK),
            &[(READ_PK, "S"), (CUSTOMER_ID, "S"), (PLACED_KEY, "S")],
        );
        let index = one_or_many(summary_table.get("GlobalSecondaryIndexes"))
            .into_iter()
            .find(|i| i.get("IndexName").and_then(text) == Some(BY_CUSTOMER_INDEX))
            .map(key_schema);
        indexes.push((summary, index));
    }
    if view != Some("NEW_IMAGE") {
        problems.push(format!(
            "{events}: the stream view is {view:?}; the publisher reads NEW_IMAGE"
        ));
    }
    if ttl != Some(IDEMPOTENCY_TTL) || ttl_on != Some(true) {
        problems.push(format!(
            "the idempotency table's TTL is {ttl:?} (enabled {ttl_on:?}), not {IDEMPOTENCY_TTL}"
        ));
    }
    for (summary, index) in indexes {
        if index.as_ref() != Some(&want_index) {
            problems.push(format!(
                "{summary}: index {BY_CUSTOMER_INDEX} is {index:?}, the code queries {want_index:?}"
            ));
        }
    }
    // A rebuild empties the slot that is not live: were the green setting
    // to name the blue table, it would empty the live model.
    let mut named: BTreeMap<String, &str> = BTreeMap::new();
    for variable in [
        ENV_EVENTS_TABLE,
        ENV_IDEMPOTENCY_TABLE,
        ENV_INVENTORY_TABLE,
        ENV_ORDER_SUMMARY_TABLE,
        ENV_ORDER_SUMMARY_GREEN_TABLE,
        ENV_SALES_TABLE,
        ENV_SALES_GREEN_TABLE,
        ENV_CHECKPOINTS_TABLE,
    ] {
        if let Some(other) = named.insert(template.resource_of(variable), variable) {
            problems.push(format!(
                "{variable} and {other} name the same table, {}",
                template.resource_of(variable)
            ));
        }
    }
    // The publisher's trigger is the events table's stream.
    for function in &template.functions {
        for trigger in function.triggers.iter().filter(|t| t.kind == "DynamoDB") {
            if trigger.fields["{stream}"] != format!("{events}.StreamArn") {
                problems.push(format!(
                    "{} reads {}, not {events}'s stream",
                    function.logical_id, trigger.fields["{stream}"]
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the tables and schema.rs drifted:\n  {}",
        problems.join("\n  ")
    );
}

/// The LocalStack service that serves each kind of resource of the template.
const LOCALSTACK_SERVICES: &[(&str, &str)] = &[
    ("AWS::DynamoDB::", "dynamodb"),
    ("AWS::SQS::", "sqs"),
    ("AWS::Events::", "events"),
    ("AWS::Serverless::Function", "lambda"),
    ("AWS::Lambda::", "lambda"),
    ("AWS::IAM::", "iam"),
    ("AWS::Logs::", "logs"),
    ("AWS::CloudWatch::", "cloudwatch"),
    ("AWS::Serverless::HttpApi", "apigateway"),
    ("AWS::ApiGatewayV2::", "apigateway"),
];

/// infra/localstack/docker-compose.yml is valid YAML, pins its image to a
/// release, listens on loopback only, and enables every service
/// template.yaml's resources need (the stack is deployed through
/// CloudFormation, with function code in S3, by an STS-identified caller).
#[test]
fn localstack_compose_file_serves_the_template() {
    let path = root().join("infra/localstack/docker-compose.yml");
    let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let compose: Value =
        serde_yaml_ng::from_str(&source).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    let service = at(&compose, &["services", "localstack"]).expect("the compose file has services.localstack");
    let mut problems = Vec::new();
    let image = service.get("image").and_then(text).unwrap_or_default();
    let pinned = image.strip_prefix("localstack/localstack:").is_some_and(|tag| {
        let parts: Vec<&str> = tag.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    if !pinned {
        problems.push(format!(
            "image {image:?} is not localstack/localstack pinned to a release (x.y.z)"
        ));
    }
    for port in one_or_many(service.get("ports")) {
        let port = text(port).unwrap_or_default();
        if !port.starts_with("127.0.0.1:") {
            problems.push(format!("port {port:?} is not bound to 127.0.0.1"));
        }
    }
    if service.get("healthcheck").is_none() {
        problems.push("no healthcheck: `docker compose up --wait` would not wait for LocalStack".to_owned());
    }
    let enabled: BTreeSet<&str> = at(service, &["environment", "SERVICES"])
        .and_then(text)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .collect();
    let template = template();
    let mut needed: BTreeSet<&str> = BTreeSet::from(["cloudformation", "s3", "sts"]);
    for (id, resource) in &template.resources {
        let kind = resource.get("Type").and_then(text).unwrap_or_default();
        match LOCALSTACK_SERVICES.iter().find(|(prefix, _)| kind.starts_with(prefix)) {
            Some((_, service)) => {
                needed.insert(service);
            }
            None => problems.push(format!(
                "{id}: no LocalStack service known for {kind}; add it to LOCALSTACK_SERVICES"
            )),
        }
        if at(resource, &["Properties", "StreamSpecification"]).is_some() {
            needed.insert("dynamodbstreams");
        }
    }
    for missing in needed.difference(&enabled) {
        problems.push(format!("SERVICES lacks {missing}, which template.yaml needs"));
    }
    assert!(
        problems.is_empty(),
        "{} drifted:\n  {}",
        path.display(),
        problems.join("\n  ")
    );
}

/// The HTTP API is authenticated unless NONE is asked for by name: the
/// `Authorizer` parameter defaults to IAM, and every route of the API's
/// body names the `tally` scheme whenever the stage is authenticated (a
/// route without that line would be public whatever the parameter says).
#[test]
fn every_route_is_authenticated_by_default() {
    let path = root().join("template.yaml");
    let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let document: Value =
        serde_yaml_ng::from_str(&source).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    let document = long_form(document);
    let authorizer = at(&document, &["Parameters", "Authorizer"]).expect("an Authorizer parameter");
    assert_eq!(authorizer.get("Default").and_then(text), Some("IAM"));
    let condition = at(&document, &["Conditions", "Authenticated"]).expect("an Authenticated condition");
    let unauthenticated: Value =
        serde_yaml_ng::from_str("{Fn::Not: [{Fn::Equals: [{Ref: Authorizer}, NONE]}]}").expect("YAML");
    assert_eq!(condition, &unauthenticated, "Authenticated is every choice but NONE");

    let secured: Value =
        serde_yaml_ng::from_str("{Fn::If: [Authenticated, [{tally: []}], {Ref: AWS::NoValue}]}").expect("YAML");
    let paths = at(
        &template().resources["HttpApi"],
        &["Properties", "DefinitionBody", "paths"],
    )
    .and_then(Value::as_mapping)
    .expect("the HTTP API's routes");
    let mut open = Vec::new();
    for (route, operations) in paths {
        for (method, operation) in operations.as_mapping().into_iter().flatten() {
            if operation.get("security") != Some(&secured) {
                open.push(format!(
                    "{} {}",
                    method.as_str().unwrap_or("?"),
                    route.as_str().unwrap_or("?")
                ));
            }
        }
    }
    assert!(paths.len() >= 10, "the body lists the API's routes");
    assert!(open.is_empty(), "routes without the `tally` security scheme: {open:?}");
}
