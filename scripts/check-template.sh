#!/usr/bin/env bash
# Lint template.yaml the way a deploy would be judged: cfn-lint, `sam validate
# --lint` and checkov, at the versions pinned in infra/template-tools.txt.
# Exits non-zero on any finding, and on a checkov skip without a reason (a
# skip is written next to its resource as Metadata: checkov: skip: - id,
# comment).
#
# Usage: scripts/check-template.sh [TEMPLATE]      (default: template.yaml)
#   VENV=DIR     where the tools are installed (default .venv-tools): DIR/sam
#                holds cfn-lint and aws-sam-cli, DIR/checkov holds checkov;
#                they cannot share a venv (see infra/template-tools.txt).
#                Installed on first use and again when the pins change.
#   PYTHON=EXE   the interpreter that creates the venvs (default python3)
#
# Offline: no AWS account, credentials or network are needed. sam gets a
# dummy region and dummy credentials, and checkov is told not to fetch its
# guideline mappings or look for a newer version of itself.
set -euo pipefail

cd "$(dirname "$0")/.."
TEMPLATE=${1:-template.yaml}
VENV=${VENV:-.venv-tools}
PYTHON=${PYTHON:-python3}
TOOLS=infra/template-tools.txt

say() { printf 'check-template: %s\n' "$*" >&2; }

# install DIR REQUIREMENT... : a venv at DIR with exactly these pins, made
# again only when the pins change.
install() {
    local dir=$1
    shift
    local want
    want=$(printf '%s\n' "$@" | sha256sum | cut -d' ' -f1)
    if [[ -x $dir/bin/python && -f $dir/.installed && $(<"$dir/.installed") == "$want" ]]; then
        return
    fi
    say "installing $* into $dir"
    local started=$SECONDS
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
    echo "$want" >"$dir/.installed"
    say "installed in $((SECONDS - started)) s"
}

mapfile -t pins < <(grep -Ev '^[[:space:]]*(#|$)' "$TOOLS")
sam_pins=() checkov_pins=()
for pin in "${pins[@]}"; do
    if [[ $pin == checkov* ]]; then checkov_pins+=("$pin"); else sam_pins+=("$pin"); fi
done
mkdir -p "$VENV"
# The venvs stay out of git without touching the repository's .gitignore.
printf '*\n' >"$VENV/.gitignore"
install "$VENV/sam" "${sam_pins[@]}"
install "$VENV/checkov" "${checkov_pins[@]}"

status=0
run() {
    local name=$1
    shift
    say "$name"
    local started=$SECONDS
    if "$@"; then
        say "$name: clean ($((SECONDS - started)) s)"
    else
        say "$name: FINDINGS (exit $?)"
        status=1
    fi
}

# cfn-lint exits non-zero on any error or warning it reports.
run "cfn-lint $TEMPLATE" "$VENV/sam/bin/cfn-lint" "$TEMPLATE"

# Plain `sam validate` wants a region and builds an AWS client; --lint needs
# neither in the pinned version, but a dummy region and credentials that
# reach no account keep it offline and off a developer's real profile
# whatever a later version does. No telemetry either.
run "sam validate --lint --template $TEMPLATE" \
    env -u AWS_PROFILE -u AWS_SESSION_TOKEN \
    AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=offline AWS_SECRET_ACCESS_KEY=offline \
    SAM_CLI_TELEMETRY=0 \
    "$VENV/sam/bin/sam" validate --lint --template "$TEMPLATE"

# checkov: one JSON report, read here rather than trusted blindly: a template
# checkov cannot parse scans nothing and "passes", and a skip written without
# a comment is still a skip (checkov calls it "No comment provided"). Not
# --quiet: that also drops the skipped checks from the JSON.
checkov_json=$(mktemp)
trap 'rm -f "$checkov_json"' EXIT
# shellcheck disable=SC2317 # called through run, which shellcheck cannot follow
checkov_report() {
    local code=0
    env BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=true \
        "$VENV/checkov/bin/checkov" -f "$TEMPLATE" --framework cloudformation \
        --skip-download -o json >"$checkov_json" || code=$?
    "$VENV/checkov/bin/python" - "$checkov_json" "$code" <<'PY'
import json, sys

path, code = sys.argv[1], int(sys.argv[2])
try:
    report = json.load(open(path))
except ValueError:
    print(f"check-template: checkov printed no report (exit {code})", file=sys.stderr)
    sys.exit(1)
summary, results = report["summary"], report["results"]
problems = []
for check in results.get("failed_checks", []):
    start, end = check["file_line_range"]
    problems.append(f"{check['check_id']} {check['check_name']}: {check['resource']} (lines {start}-{end})")
if summary["parsing_errors"] or not summary["passed"] + summary["failed"]:
    problems.append(f"nothing was checked: {summary}")
for check in results.get("skipped_checks", []):
    reason = (check.get("check_result", {}).get("suppress_comment") or "").strip()
    if not reason or reason == "No comment provided":
        problems.append(f"{check['check_id']} is skipped on {check['resource']} without a reason")
for problem in problems:
    print(f"check-template: checkov: {problem}", file=sys.stderr)
print(
    f"check-template: checkov: {summary['passed']} passed, {summary['failed']} failed, "
    f"{summary['skipped']} skipped",
    file=sys.stderr,
)
sys.exit(1 if problems or code else 0)
PY
}
run "checkov -f $TEMPLATE --framework cloudformation" checkov_report

if ((status)); then
    say "FAILED: fix the template, or skip a checkov check next to its resource with the reason"
fi
exit $status
