#!/usr/bin/env bash
# LocalStack for Tally: bring it up, deploy template.yaml into it, tear it down.
#
# The deploy is infra/emulator/deploy_template.py, the very code that deploys
# template.yaml into the bundled emulator (moto) for `make test`: the SAM
# transform expanded offline with samtranslator, then CloudFormation's
# create_stack. So LocalStack gets the same tables, stream, bus, rules,
# queues with their redrive policies, roles and functions as the tests and
# as AWS. As in the tests, the event source mappings are left out (the test
# driver stands in for them) and the functions hold placeholder code; see
# docs/deployment.md for running the real functions inside LocalStack.
#
# Usage: infra/localstack/localstack.sh COMMAND [deploy_template.py args...]
#   up         docker compose up, wait until healthy, then bootstrap
#   ready      wait until LocalStack answers with the services we need
#   bootstrap  deploy stage $STAGE (default local) unless already deployed;
#              writes data/localstack/$STAGE.json (the deployment: outputs,
#              functions and their environment, event source mappings) and
#              data/localstack/$STAGE.env (for `cargo lambda watch --env-file`)
#   check      ready within 10 s, or say why not (Docker missing, or not up)
#   down       docker compose down, dropping LocalStack's state
#
#   AWS_ENDPOINT_URL  where LocalStack listens (default http://127.0.0.1:4566)
#   STAGE             the template's Stage (default local): stack tally-$STAGE
#   PYTHON            the venv with deploy_template.py's packages (default
#                     .venv/bin/python, installed by `make emulator`)
#   LOCALSTACK_WAIT   seconds `ready` waits (default 120)
#
# Nothing here needs an AWS account: LocalStack takes any credentials, and
# the dummy ones below keep a developer's real profile out of it.
set -euo pipefail

cd "$(dirname "$0")/../.."
COMPOSE_FILE=infra/localstack/docker-compose.yml
ENDPOINT=${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}
STAGE=${STAGE:-local}
PYTHON=${PYTHON:-.venv/bin/python}
WAIT=${LOCALSTACK_WAIT:-120}
OUT=data/localstack
# Services ready before deploying (the compose file's SERVICES, less the ones
# LocalStack only starts on first use).
NEEDED=dynamodb,dynamodbstreams,events,sqs,lambda,cloudformation,s3,iam,sts,logs

export AWS_ENDPOINT_URL=$ENDPOINT
export AWS_REGION=${AWS_REGION:-us-east-1} AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
unset AWS_PROFILE AWS_SESSION_TOKEN
# LocalStack creates the ~70 resources of the stack more slowly than moto;
# deploy_template.py reads this where it supports it.
export TALLY_DEPLOY_TIMEOUT=${TALLY_DEPLOY_TIMEOUT:-300}

say() { printf 'localstack: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

need_docker() {
    local why="LocalStack runs in Docker, with the compose plugin. Without them, \`make test\` runs the same suite against the bundled emulator (moto)."
    command -v docker >/dev/null 2>&1 || die "docker is not installed. $why"
    docker compose version >/dev/null 2>&1 || die "the docker compose plugin is not installed (\`docker compose version\` failed). $why"
    docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (\`docker info\` failed): start it. $why"
}

need_python() {
    [[ -x $PYTHON ]] || die "$PYTHON is missing: run \`make emulator\` (it installs moto, boto3 and samtranslator into .venv)"
}

# ready [SECONDS]: LocalStack's health endpoint lists every needed service as
# available or running.
ready() {
    local seconds=${1:-$WAIT}
    python3 - "$ENDPOINT" "$NEEDED" "$seconds" <<'PY'
import json, sys, time, urllib.request

endpoint, needed, seconds = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3])
deadline, last = time.monotonic() + seconds, "no answer"
while True:
    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=5) as response:
            services = json.load(response).get("services", {})
        missing = [s for s in needed if services.get(s) not in ("available", "running")]
        if not missing:
            print(f"localstack: ready at {endpoint}", file=sys.stderr)
            sys.exit(0)
        last = "not ready: " + ", ".join(f"{s}={services.get(s, 'absent')}" for s in missing)
    except (OSError, ValueError) as error:
        last = f"no answer ({error})"
    if time.monotonic() > deadline:
        print(f"localstack: {endpoint} is not a ready LocalStack after {seconds:.0f} s: {last}", file=sys.stderr)
        sys.exit(1)
    time.sleep(1)
PY
}

# stack_exists: 0 if tally-$STAGE exists at the endpoint, 1 if not, 2 if
# the endpoint does not answer.
stack_exists() {
    "$PYTHON" - "tally-$STAGE" <<'PY'
import sys
import boto3
from botocore.exceptions import BotoCoreError, ClientError

try:
    boto3.client("cloudformation").describe_stacks(StackName=sys.argv[1])
except ClientError as error:
    sys.exit(1 if "does not exist" in str(error) else 2)
except BotoCoreError as error:
    print(f"localstack: {error}", file=sys.stderr)
    sys.exit(2)
PY
}

# summary JSON: the stack's outputs, and how to point a tool at them.
summary() {
    "$PYTHON" - "$1" "$OUT/$STAGE.env" <<'PY'
import json, sys

deployment = json.load(open(sys.argv[1]))
print(f"stack {deployment['stack']}:")
for key, value in sorted(deployment["outputs"].items()):
    print(f"  {key:24} {value if value is not None else '(not emulated)'}")
print(f"functions (environment in {sys.argv[2]}): {', '.join(sorted(deployment['functions']))}")
PY
    say "point the SDK, the CLI or \`cargo lambda watch --env-file $OUT/$STAGE.env\` at it with AWS_ENDPOINT_URL=$ENDPOINT"
}

# env_file JSON: every function's variables (one projector's TALLY_PROJECTION:
# `cargo lambda watch` runs all functions in one environment) and the endpoint.
env_file() {
    "$PYTHON" - "$1" <<'PY'
import json, os, sys

deployment = json.load(open(sys.argv[1]))
variables = {}
for name, function in sorted(deployment["functions"].items()):
    for key, value in function["env"].items():
        variables.setdefault(key, value)
for key in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
    variables[key] = os.environ[key]
for key, value in sorted(variables.items()):
    print(f"{key}={value}")
PY
}

bootstrap() {
    need_python
    mkdir -p "$OUT"
    local json=$OUT/$STAGE.json exists=0
    stack_exists || exists=$?
    if ((exists == 2)); then
        die "no CloudFormation answers at $ENDPOINT: is LocalStack up? (\`make local-stack\`)"
    elif ((exists == 0)); then
        say "stack tally-$STAGE is already deployed at $ENDPOINT; kept (\`make local-stack-down\` starts over)"
    else
        say "deploying template.yaml as stack tally-$STAGE into $ENDPOINT"
        "$PYTHON" infra/emulator/deploy_template.py --endpoint "$ENDPOINT" --stage "$STAGE" "$@" >"$json.tmp"
        mv "$json.tmp" "$json"
        env_file "$json" >"$OUT/$STAGE.env"
    fi
    if [[ -f $json ]]; then
        summary "$json"
    fi
}

command=${1:-}
shift || true
case $command in
up)
    need_docker
    need_python
    say "starting LocalStack ($COMPOSE_FILE)"
    docker compose -f "$COMPOSE_FILE" up -d --wait
    ready
    bootstrap "$@"
    ;;
ready)
    ready "$@"
    ;;
check)
    if ! ready 10; then
        need_docker
        die "LocalStack is not up at $ENDPOINT: start it with \`make local-stack\`"
    fi
    ;;
bootstrap)
    bootstrap "$@"
    ;;
down)
    need_docker
    docker compose -f "$COMPOSE_FILE" down -v
    ;;
*)
    die "usage: $0 up|ready|check|bootstrap|down [deploy_template.py args...]"
    ;;
esac
