"""Deploy template.yaml itself into a running moto server, offline.

One template for every environment: the end-to-end tests take their tables,
bus, rules and queues from the template AWS gets, not from a second,
hand-written list. Run with the project venv's python (moto and
aws-sam-translator, pinned in requirements.txt beside this file):

    python infra/emulator/deploy_template.py --endpoint http://127.0.0.1:PORT \
        --stage STAGE [--template PATH] [--region us-east-1] [--self-test]

Steps:
1. Expand the SAM transform with samtranslator (the version aws-sam-cli pins
   in infra/template-tools.txt, so the emulator sees what `sam deploy` sends).
   Local CodeUri values point at a placeholder object in emulated S3 first,
   as `sam package` would point them at the built artifacts.
2. Remove every AWS::Lambda::EventSourceMapping after recording its
   properties: moto would poll the queues and the stream itself and swallow
   or mis-handle the messages (it runs functions in Docker, which the tests
   neither have nor want). The test driver stands in for the mappings and
   reads their settings from this script's output.
3. Put placeholder function code into emulated S3 (moto fetches it from there
   when it creates a function) and call CloudFormation create_stack with
   Stage=STAGE and DeletionProtection=false; wait for CREATE_COMPLETE.
4. Resolve everything from the created stack (outputs, stack resources, the
   functions' configuration from moto's Lambda API) and print ONE JSON object
   on stdout; logs go to stderr:

    {"stack": "tally-STAGE",
     "outputs": {"EventsTableName": "tally-STAGE-events", ...every Output...},
     "functions": {"CommandApiFunction": {"name": "tally-STAGE-command-api",
                                          "env": {"TALLY_EVENTS_TABLE": ...}}, ...},
     "event_source_mappings": [
       {"function": "StreamPublisherFunction", "function_name": "...",
        "kind": "dynamodb", "source_arn": "<stream arn>", "batch_size": 100,
        "maximum_batching_window_seconds": 1, "bisect_on_error": true,
        "maximum_retry_attempts": 5, "maximum_record_age_seconds": 3600,
        "report_batch_item_failures": true, "starting_position": "TRIM_HORIZON",
        "on_failure_queue_url": "<PublisherDlq url>"},
       {"function": "OrderSummaryProjectorFunction", "function_name": "...",
        "kind": "sqs", "source_arn": "<queue arn>", "queue_url": "<queue url>",
        "batch_size": 10, "maximum_batching_window_seconds": 1,
        "report_batch_item_failures": true, "maximum_concurrency": 5}, ...]}

   An output moto cannot resolve (it names a resource moto skipped) is null.
   Intrinsic values inside a mapping (the stream ARN, !Ref StreamMaxRetries,
   ...) are resolved by moto itself: the script adds a temporary stack output
   for each and reads it back, so they mean what CloudFormation makes of them.

--self-test then checks, after the deploy, that the emulator really has what
the tests rely on, and exits non-zero if not: each queue's RedrivePolicy
(maxReceiveCount, DLQ), the events table's stream, every GSI, and that an
order event (source tally, subject order-...) put on the bus is delivered by
each rule to its queue (and an inventory event is not). Its messages are
deleted again, so the queues are left empty.

What moto 5.2.5 does with this template (seen when writing this; lint those
settings with scripts/check-template.sh, since the emulator cannot show them):
- Function code must come from an emulated S3 bucket (step 3): without the
  bucket, create_stack fails with NoSuchBucket (sent as a JSON body that the
  CloudFormation client cannot even parse); a missing key in an existing
  bucket goes unnoticed.
- `!Ref` of an AWS::Events::EventBus yields no name (its physical id is
  empty); the template uses `!GetAtt EventBus.Name`, which works.
- Skipped with only a warning in the server log ("No Moto CloudFormation
  support for ..."): AWS::SQS::QueuePolicy, AWS::CloudWatch::Alarm,
  AWS::ApiGatewayV2::Api and ::Stage (the HTTP API). A `!Sub` naming a
  skipped resource keeps the literal `${HttpApi}`: ApiUrl is reported as
  null, and the invoke permissions' SourceArn holds the literal text.
- Accepted but not applied: the tables' SSESpecification (no SSEDescription),
  PointInTimeRecoverySpecification (PITR stays DISABLED), the idempotency
  table's TimeToLiveSpecification (TTL stays DISABLED; the store checks
  expires_at itself); the functions' Architectures (reported x86_64),
  TracingConfig (PassThrough) and LoggingConfig (none); a role's
  ManagedPolicyArns (the policy is created but not attached).
- Parameters are checked against neither AllowedPattern, AllowedValues nor
  the Rules section (Stage=Upper_Case and Authorizer=BASIC deploy), so this
  script checks Stage itself. A create_stack that fails half-way still
  holds its stack name: the next attempt gets AlreadyExists.
- Applied: table keys, GSIs and the stream (NEW_IMAGE, with a stream ARN),
  queues with SqsManagedSseEnabled, VisibilityTimeout, MessageRetentionPeriod
  and RedrivePolicy, the bus, the rules with their patterns and queue
  targets (delivery works), log groups with retention, roles with inline
  policies, functions with their environment, Lambda permissions,
  Conditions and Fn::If.
- A queue's URL (its !Ref, so the *QueueUrl outputs and the URLs above) is
  in AWS's form, https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, not the
  emulator's address; moto finds the queue by its name whatever the host,
  and the SDKs send to the configured endpoint, so it works as it is.
- A !Ref of a Number parameter in a function's environment comes back from
  moto's Lambda API as a JSON number; Lambda's environment is strings only,
  so the script reports it as a string.
- An event delivered to SQS by a rule carries id, time, version,
  detail-type, source, region, resources and detail, but no `account` field
  (AWS sends one): a decoder must not require it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import time
import zipfile
from typing import Any

STACK_PREFIX = "tally-"
CODE_BUCKET = "tally-emulator-code"
CODE_KEY = "placeholder/bootstrap.zip"
# Temporary outputs that carry a mapping's intrinsic values back from moto.
PROBE_PREFIX = "TallyDeployProbe"
# LocalStack creates the stack's ~70 resources far more slowly than moto.
CREATE_TIMEOUT_SECONDS = float(os.environ.get("TALLY_DEPLOY_TIMEOUT", "60"))
# The repository's template, wherever the caller's working directory is
# (cargo runs each test binary in its own crate's directory).
DEFAULT_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "template.yaml")


def log(message: str) -> None:
    print(f"deploy_template: {message}", file=sys.stderr, flush=True)


class NoManagedPolicies:
    """The template names no AWS managed policy (every role is explicit), so
    the transform never needs IAM's list of them: nothing to load, offline."""

    def load(self) -> dict[str, str]:
        return {}


def read_template(path: str) -> dict[str, Any]:
    # samtranslator's loader turns the short forms (!Ref, !GetAtt, !Sub, ...)
    # into the long ones the transform and CloudFormation expect.
    from samtranslator.yaml_helper import yaml_parse

    with open(path, encoding="utf-8") as f:
        return yaml_parse(f.read())


def check_parameter(template: dict[str, Any], name: str, value: str) -> None:
    """Fail fast on a value the template refuses (moto does not check
    AllowedPattern), so a test never runs on a stage AWS would reject."""
    spec = template.get("Parameters", {}).get(name, {})
    pattern = spec.get("AllowedPattern")
    if pattern and not re.fullmatch(pattern, value):
        raise SystemExit(f"deploy_template: {name}={value!r} does not match {pattern}")


def point_code_at_placeholder(template: dict[str, Any]) -> None:
    code = {"Bucket": CODE_BUCKET, "Key": CODE_KEY}
    function_globals = template.get("Globals", {}).get("Function", {})
    if "CodeUri" in function_globals:
        function_globals["CodeUri"] = code
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            if "CodeUri" in resource.get("Properties", {}):
                resource["Properties"]["CodeUri"] = code


def point_code_at_builds(template: dict[str, Any], code_dir: str) -> dict[str, str]:
    """Each function's code is its built binary, `code_dir/<Binary>/bootstrap`
    (`make build` writes target/lambda/<Binary>/bootstrap): for an emulator
    that runs the functions (LocalStack). Returns S3 key -> file to upload."""
    uploads = {}
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        binary = resource.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        path = os.path.join(code_dir, binary or "?", "bootstrap")
        if not os.path.isfile(path):
            raise SystemExit(f"deploy_template: {logical_id}: {path} is missing (run `make build`)")
        key = f"functions/{binary}/bootstrap.zip"
        resource.setdefault("Properties", {})["CodeUri"] = {"Bucket": CODE_BUCKET, "Key": key}
        uploads[key] = path
    return uploads


def expand_sam(template: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    from samtranslator.translator.transform import transform

    return transform(template, parameters, NoManagedPolicies())


def is_intrinsic(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and (
        "Ref" in value or next(iter(value)).startswith("Fn::")
    )


def take_event_source_mappings(template: dict[str, Any], remove: bool = True) -> list[dict[str, Any]]:
    """Remove the mappings from the template (unless `remove` is false: the
    emulator runs the functions and polls for them); return them with every
    intrinsic value replaced by a probe output's name, for moto to resolve."""
    resources = template["Resources"]
    outputs = template.setdefault("Outputs", {})
    mappings = []
    for logical_id in [k for k, v in resources.items() if v["Type"] == "AWS::Lambda::EventSourceMapping"]:
        resource = resources.pop(logical_id) if remove else resources[logical_id]
        properties = resource.get("Properties", {})
        function = properties.get("FunctionName")
        if not (isinstance(function, dict) and "Ref" in function):
            raise SystemExit(f"deploy_template: {logical_id}: FunctionName is not a !Ref of a function")

        def probe(value: Any, path: str) -> Any:
            if is_intrinsic(value):
                name = f"{PROBE_PREFIX}{len(outputs)}"
                outputs[name] = {"Value": value}
                return {"probe": name}
            if isinstance(value, dict):
                return {k: probe(v, f"{path}.{k}") for k, v in value.items()}
            if isinstance(value, list):
                return [probe(v, f"{path}[{i}]") for i, v in enumerate(value)]
            return value

        mappings.append(
            {
                "logical_id": logical_id,
                "function": function["Ref"],
                "properties": probe({k: v for k, v in properties.items() if k != "FunctionName"}, logical_id),
            }
        )
    return mappings


def placeholder_zip() -> bytes:
    # Fixed timestamps: the same bytes every run, so the code hash is stable.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("bootstrap", date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o755 << 16
        archive.writestr(info, "#!/bin/sh\n# Placeholder: the emulator never runs functions.\nexit 1\n")
    return buffer.getvalue()


def built_zip(path: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("bootstrap", date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o755 << 16
        with open(path, "rb") as f:
            archive.writestr(info, f.read())
    return buffer.getvalue()


def upload_placeholder_code(session: Any, endpoint: str, region: str, builds: dict[str, str] | None = None) -> None:
    s3 = session.client("s3", endpoint_url=endpoint)
    kwargs: dict[str, Any] = {"Bucket": CODE_BUCKET}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass  # another stage deployed into this emulator first
    s3.put_object(Bucket=CODE_BUCKET, Key=CODE_KEY, Body=placeholder_zip())
    for key, path in (builds or {}).items():
        s3.put_object(Bucket=CODE_BUCKET, Key=key, Body=built_zip(path))


def create_stack(cfn: Any, stack: str, template: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    cfn.create_stack(
        StackName=stack,
        TemplateBody=json.dumps(template, separators=(",", ":")),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    deadline = time.monotonic() + CREATE_TIMEOUT_SECONDS
    while True:
        description = cfn.describe_stacks(StackName=stack)["Stacks"][0]
        status = description["StackStatus"]
        if status == "CREATE_COMPLETE":
            return description
        if not status.endswith("_IN_PROGRESS") or time.monotonic() > deadline:
            for event in cfn.describe_stack_events(StackName=stack)["StackEvents"]:
                if event.get("ResourceStatusReason"):
                    log(f"{event['LogicalResourceId']}: {event['ResourceStatus']}: {event['ResourceStatusReason']}")
            raise SystemExit(f"deploy_template: stack {stack} ended in {status}")
        time.sleep(0.1)


def stack_outputs(description: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The template's outputs (null where moto left a `${...}` unresolved) and
    the probe outputs, apart."""
    outputs: dict[str, Any] = {}
    probes: dict[str, str] = {}
    for output in description.get("Outputs", []):
        key, value = output["OutputKey"], output.get("OutputValue")
        if key.startswith(PROBE_PREFIX):
            probes[key] = value
        elif value is None or "${" in value:
            log(f"output {key} is unresolved in the emulator ({value!r}): reported as null")
            outputs[key] = None
        else:
            outputs[key] = value
    return outputs, probes


def resolve_probes(value: Any, probes: dict[str, str]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"probe"}:
            return probes[value["probe"]]
        return {k: resolve_probes(v, probes) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_probes(v, probes) for v in value]
    return value


def as_int(value: Any) -> int | None:
    # A !Ref of a Number parameter comes back from an output as a string.
    return None if value is None else int(value)


def stack_queue_urls(cfn: Any, sqs: Any, stack: str) -> dict[str, str]:
    """Queue ARN -> the URL the stack gives for it (its physical id, the same
    form as the *QueueUrl outputs)."""
    urls = {}
    for page in cfn.get_paginator("list_stack_resources").paginate(StackName=stack):
        for resource in page["StackResourceSummaries"]:
            if resource.get("ResourceType") == "AWS::SQS::Queue":
                url = resource["PhysicalResourceId"]
                arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
                urls[arn] = url
    return urls


def describe_mapping(mapping: dict[str, Any], probes: dict[str, str], functions: dict[str, Any], queue_urls: dict[str, str]) -> dict[str, Any]:
    p = resolve_probes(mapping["properties"], probes)
    source_arn = p["EventSourceArn"]
    common = {
        "function": mapping["function"],
        "function_name": functions[mapping["function"]]["name"],
    }
    batching = as_int(p.get("MaximumBatchingWindowInSeconds", 0))
    report_failures = "ReportBatchItemFailures" in p.get("FunctionResponseTypes", [])
    service = source_arn.split(":")[2]
    if service == "dynamodb":
        on_failure = p.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        # AWS defaults where the template is silent: batch 100, retry until the
        # record expires (-1), no bisection.
        return {
            **common,
            "kind": "dynamodb",
            "source_arn": source_arn,
            "batch_size": as_int(p.get("BatchSize", 100)),
            "maximum_batching_window_seconds": batching,
            "bisect_on_error": bool(p.get("BisectBatchOnFunctionError", False)),
            "maximum_retry_attempts": as_int(p.get("MaximumRetryAttempts", -1)),
            "maximum_record_age_seconds": as_int(p.get("MaximumRecordAgeInSeconds", -1)),
            "report_batch_item_failures": report_failures,
            "starting_position": p.get("StartingPosition"),
            "on_failure_queue_url": queue_urls[on_failure] if on_failure else None,
        }
    if service == "sqs":
        return {
            **common,
            "kind": "sqs",
            "source_arn": source_arn,
            "queue_url": queue_urls[source_arn],
            "batch_size": as_int(p.get("BatchSize", 10)),
            "maximum_batching_window_seconds": batching,
            "report_batch_item_failures": report_failures,
            "maximum_concurrency": as_int(p.get("ScalingConfig", {}).get("MaximumConcurrency")),
        }
    raise SystemExit(f"deploy_template: {mapping['logical_id']}: unsupported event source {source_arn}")


def describe_functions(cfn: Any, awslambda: Any, stack: str) -> dict[str, Any]:
    functions = {}
    paginator = cfn.get_paginator("list_stack_resources")
    for page in paginator.paginate(StackName=stack):
        for resource in page["StackResourceSummaries"]:
            if resource.get("ResourceType") != "AWS::Lambda::Function":
                continue
            name = resource["PhysicalResourceId"]
            configuration = awslambda.get_function_configuration(FunctionName=name)
            variables = configuration.get("Environment", {}).get("Variables", {})
            functions[resource["LogicalResourceId"]] = {
                "name": name,
                # Lambda's environment is strings only; moto keeps a Number
                # parameter's !Ref as a number.
                "env": {k: str(v) for k, v in variables.items()},
            }
    return dict(sorted(functions.items()))


def self_test(
    session: Any, endpoint: str, template: dict[str, Any], result: dict[str, Any], delivery_wait: float = 0, check_delivery: bool = True
) -> list[str]:
    """Check the emulator holds what the tests rely on; return the failures."""
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        log(f"self-test {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    cfn = session.client("cloudformation", endpoint_url=endpoint)
    sqs = session.client("sqs", endpoint_url=endpoint)
    ddb = session.client("dynamodb", endpoint_url=endpoint)
    events = session.client("events", endpoint_url=endpoint)
    physical = {
        r["LogicalResourceId"]: r.get("PhysicalResourceId")
        for page in cfn.get_paginator("list_stack_resources").paginate(StackName=result["stack"])
        for r in page["StackResourceSummaries"]
    }
    resources = template["Resources"]

    for logical_id, resource in resources.items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in properties:
            attributes = sqs.get_queue_attributes(QueueUrl=physical[logical_id], AttributeNames=["All"])["Attributes"]
            redrive = json.loads(attributes.get("RedrivePolicy", "{}"))
            dlq_id = properties["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=physical[dlq_id], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            want = int(properties["RedrivePolicy"]["maxReceiveCount"])
            check(
                int(redrive.get("maxReceiveCount", 0)) == want and redrive.get("deadLetterTargetArn") == dlq_arn,
                f"{logical_id} redrives to {dlq_id} after {want} receives (got {redrive})",
            )
        if resource["Type"] == "AWS::DynamoDB::Table":
            table = ddb.describe_table(TableName=physical[logical_id])["Table"]
            if "StreamSpecification" in properties:
                view = properties["StreamSpecification"]["StreamViewType"]
                spec = table.get("StreamSpecification", {})
                check(
                    spec.get("StreamEnabled") is True and spec.get("StreamViewType") == view and bool(table.get("LatestStreamArn")),
                    f"{logical_id} has a {view} stream ({table.get('LatestStreamArn')})",
                )
            for index in properties.get("GlobalSecondaryIndexes", []):
                found = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}.get(index["IndexName"])
                check(
                    found is not None and found["KeySchema"] == index["KeySchema"],
                    f"{logical_id} has GSI {index['IndexName']} keyed {[k['AttributeName'] for k in index['KeySchema']]}",
                )

    if not check_delivery:
        log("self-test skips rule delivery: the event source mappings consume the queues")
        return failures
    # Delivery: an order event (source tally, subject order-...) must reach
    # each rule's queue; an inventory event must reach none. Every event goes
    # out before any queue is drained, as several rules match one event.
    bus = result["outputs"].get("EventBusName")
    queue_of_arn = stack_queue_urls(cfn, sqs, result["stack"])
    expected = []  # (rule, queue url, nonce, detail-type)
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Events::Rule":
            continue
        pattern = resource["Properties"]["EventPattern"]
        nonce = f"self-test-{logical_id}-{time.time_ns()}"
        prefix = pattern["detail"]["subject"][0]["prefix"]
        entry = {
            "EventBusName": bus,
            "Source": pattern["source"][0],
            "DetailType": "OrderPlaced",
            "Detail": json.dumps({"subject": f"{prefix}self-test", "self_test": nonce}),
        }
        check(events.put_events(Entries=[entry])["FailedEntryCount"] == 0, f"put {entry['Source']}/{entry['DetailType']} on bus {bus}")
        for target in events.list_targets_by_rule(Rule=physical[logical_id], EventBusName=bus)["Targets"]:
            queue_url = queue_of_arn.get(target["Arn"])
            check(queue_url is not None, f"{logical_id} targets a queue of this stack ({target['Arn']})")
            if queue_url is not None:
                expected.append((logical_id, queue_url, nonce, entry["DetailType"]))
    # moto delivers inside PutEvents; LocalStack a moment later: poll for
    # up to delivery_wait seconds until every expected message is in.
    received: dict[str, list[dict[str, Any]]] = {q: [] for q in sorted({e[1] for e in expected})}
    deadline = time.monotonic() + delivery_wait
    while True:
        for queue_url in received:
            received[queue_url] += [json.loads(m["Body"]) for m in drain(sqs, queue_url)]
        seen = {b.get("detail", {}).get("self_test") for bodies in received.values() for b in bodies}
        if all(nonce in seen for _, _, nonce, _ in expected) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for logical_id, queue_url, nonce, detail_type in expected:
        check(
            any(b.get("detail", {}).get("self_test") == nonce and b.get("detail-type") == detail_type for b in received[queue_url]),
            f"{logical_id} delivered {detail_type} to {queue_url}",
        )
    events.put_events(
        Entries=[{"EventBusName": bus, "Source": "tally", "DetailType": "StockReceived", "Detail": json.dumps({"subject": "inventory-self-test"})}]
    )
    time.sleep(delivery_wait)  # give an asynchronous emulator the time a delivery would take
    for queue_url in sorted(received):
        check(not drain(sqs, queue_url), f"nothing delivered to {queue_url} for an inventory event")
    return failures


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Receive and delete everything visible (the self-test's own messages)."""
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not batch:
            return messages
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        messages.extend(batch)


def deploy(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    started = time.monotonic()
    # Offline and account-free: the emulator accepts any credentials, and
    # samtranslator reads the region from the environment.
    os.environ["AWS_DEFAULT_REGION"] = args.region
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    import boto3

    session = boto3.session.Session(region_name=args.region)
    stack = f"{STACK_PREFIX}{args.stage}"
    parameters = {"Stage": args.stage, "DeletionProtection": "false"}

    sam_template = read_template(args.template)
    check_parameter(sam_template, "Stage", args.stage)
    point_code_at_placeholder(sam_template)
    builds = point_code_at_builds(sam_template, args.code_dir) if args.code_dir else {}
    template = expand_sam(sam_template, parameters)
    mappings = take_event_source_mappings(template, remove=not args.keep_event_source_mappings)
    kept = "kept" if args.keep_event_source_mappings else "set aside"
    log(f"expanded {args.template}: {len(template['Resources'])} resources, {len(mappings)} event source mappings {kept}")

    upload_placeholder_code(session, args.endpoint, args.region, builds)
    cfn = session.client("cloudformation", endpoint_url=args.endpoint)
    description = create_stack(cfn, stack, template, parameters)
    outputs, probes = stack_outputs(description)

    awslambda = session.client("lambda", endpoint_url=args.endpoint)
    sqs = session.client("sqs", endpoint_url=args.endpoint)
    functions = describe_functions(cfn, awslambda, stack)
    queue_urls = stack_queue_urls(cfn, sqs, stack)
    result = {
        "stack": stack,
        "outputs": outputs,
        "functions": functions,
        "event_source_mappings": [describe_mapping(m, probes, functions, queue_urls) for m in mappings],
    }
    log(f"stack {stack} CREATE_COMPLETE in {time.monotonic() - started:.2f} s")

    failures = (
        self_test(
            session,
            args.endpoint,
            template,
            result,
            delivery_wait=args.delivery_wait,
            check_delivery=not args.keep_event_source_mappings,
        )
        if args.self_test
        else []
    )
    return result, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", required=True, help="the emulator (moto or LocalStack), e.g. http://127.0.0.1:5000")
    parser.add_argument("--stage", required=True, help="the Stage parameter; the stack is tally-STAGE")
    parser.add_argument("--template", default=os.path.normpath(DEFAULT_TEMPLATE), help="default: the repository's template.yaml")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--self-test", action="store_true", help="check redrive, stream, GSIs and rule delivery after deploying")
    parser.add_argument(
        "--delivery-wait", type=float, default=0, help="seconds the self-test waits for a rule's delivery (0 for moto, which delivers at once)"
    )
    parser.add_argument(
        "--keep-event-source-mappings",
        action="store_true",
        help="deploy the mappings too, for an emulator that runs the functions (LocalStack); still describes them",
    )
    parser.add_argument("--code-dir", help="deploy each function's built binary DIR/<Binary>/bootstrap (make build: target/lambda) instead of a placeholder")
    args = parser.parse_args()

    from botocore.exceptions import BotoCoreError, ClientError

    # stdout carries the one JSON object: anything a library prints goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            result, failures = deploy(args)
        except (BotoCoreError, ClientError) as error:
            # A stage already deployed into this emulator, or no emulator at
            # the endpoint: say which, without a traceback.
            log(f"failed: {error}")
            return 1
    print(json.dumps(result, indent=1, sort_keys=False))
    if failures:
        log(f"self-test: {len(failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
