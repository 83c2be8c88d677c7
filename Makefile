# Tally — the commands a newcomer needs. Builds are sized for 2 cores.
CARGO ?= cargo
JOBS  ?= 2
PORT  ?= 3000
DB    ?= data/tally.db
VENV  ?= .venv
PYTHON ?= python3

.PHONY: run test lint fmt bench emulator build check-template help deploy watch invoke-local local-stack local-stack-down test-localstack

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

run: ## serve the API on 127.0.0.1:$(PORT) over the embedded SQLite store ($(DB))
	$(CARGO) run -j$(JOBS) --release -p tally-cli --bin tally -- serve --port $(PORT) --db $(DB)

# The pinned AWS emulator (moto) for the DynamoDB/EventBridge/SQS tests, in a project venv.
$(VENV)/.installed: infra/emulator/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/emulator/requirements.txt
	touch $@

emulator: $(VENV)/.installed ## install the pinned AWS emulator into .venv

$(VENV)/.build-tools: infra/build-requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/build-requirements.txt
	rustup target add aarch64-unknown-linux-gnu
	touch $@

LAMBDAS := $(notdir $(wildcard functions/*))

build: $(VENV)/.build-tools ## cross-compile every Lambda for arm64 (cargo-lambda + zig) and print the binary sizes
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --release --arm64 -j$(JOBS) $(addprefix -p ,$(LAMBDAS))
	@ls -l $(foreach f,$(LAMBDAS),target/lambda/$(f)/bootstrap) | awk '{printf "%-40s %6.1f MiB\n", $$9, $$5/1048576}'

test: $(VENV)/.installed ## run every test: domain specs, store contract suites, API scenarios, the AWS pipeline on the emulator (template.yaml deployed into it)
	$(CARGO) test -j$(JOBS) --workspace --no-fail-fast

lint: ## formatting and clippy, as CI checks them
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy -j$(JOBS) --workspace --all-targets -- -D warnings

check-template: ## lint template.yaml: cfn-lint, sam validate --lint, checkov (tools in .venv-tools)
	bash scripts/check-template.sh

fmt: ## format the code
	$(CARGO) fmt --all

bench: $(VENV)/.installed ## print the benchmark figures (see docs/performance.md)
	$(CARGO) run -j$(JOBS) --profile bench -p tally-bench --bin tally-bench
	$(CARGO) run -j$(JOBS) --profile bench -p tally-emulator --bin bench-command-path
	$(CARGO) run -j$(JOBS) --profile bench -p tally-emulator --bin bench-pipeline
	$(CARGO) run -j$(JOBS) --profile bench -p tally-emulator --bin bench-rebuild
	bash scripts/bench-load.sh

# --- AWS: SAM -------------------------------------------------------------------
# The SAM CLI scripts/check-template.sh installs (pinned in infra/template-tools.txt).
SAM ?= .venv-tools/sam/bin/sam
# `sam build` runs `cargo lambda build --release --arm64` per function (the
# rust-cargolambda workflow, still beta), with cargo-lambda and zig from the
# venv `make build` uses.
SAM_BUILD_ENV = PATH="$(CURDIR)/$(VENV)/bin:$$PATH" CARGO_BUILD_JOBS=$(JOBS) SAM_CLI_TELEMETRY=0

deploy: check-template $(VENV)/.build-tools ## lint, sam build, sam deploy to your AWS account (--guided the first time: it writes samconfig.toml)
	$(SAM_BUILD_ENV) $(SAM) build --beta-features
	@if [ -f samconfig.toml ]; then \
		echo "SAM_CLI_TELEMETRY=0 $(SAM) deploy   # settings from samconfig.toml"; \
		SAM_CLI_TELEMETRY=0 $(SAM) deploy; \
	else \
		echo "SAM_CLI_TELEMETRY=0 $(SAM) deploy --guided   # first deploy: answers go to samconfig.toml"; \
		SAM_CLI_TELEMETRY=0 $(SAM) deploy --guided; \
	fi

# --- Lambdas on this machine: cargo lambda ------------------------------------
WATCH_ENV   ?= data/localstack/local.env
LAMBDA_PORT ?= 9000
CARGO_LAMBDA = PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda

watch: $(VENV)/.build-tools ## serve every Lambda locally (cargo lambda watch, 127.0.0.1:$(LAMBDA_PORT)) with the settings in $(WATCH_ENV)
	@test -f $(WATCH_ENV) || { echo "make watch: $(WATCH_ENV) is missing. make local-stack writes it (or any KEY=VALUE file with the variables in README.md, Configuration: WATCH_ENV=path)" >&2; exit 1; }
	$(CARGO_LAMBDA) watch --invoke-address 127.0.0.1 --invoke-port $(LAMBDA_PORT) --env-file $(WATCH_ENV)

invoke-local: $(VENV)/.build-tools ## send every events/<function>/*.json to its function under make watch (start that first, in another terminal)
	@for dir in events/*/; do \
		function=$$(basename $$dir); \
		for payload in $$dir*.json; do \
			echo "== $$function < $$payload"; \
			$(CARGO_LAMBDA) invoke $$function --invoke-address 127.0.0.1 --invoke-port $(LAMBDA_PORT) --data-file $$payload \
				|| { echo "make invoke-local: $$function failed on $$payload (is make watch running?)" >&2; exit 1; }; \
			echo; \
		done; \
	done

# --- LocalStack: the same template, in Docker -----------------------------------
LOCALSTACK          = bash infra/localstack/localstack.sh
LOCALSTACK_ENDPOINT ?= http://127.0.0.1:4566

local-stack: $(VENV)/.installed ## LocalStack in Docker, healthy, with template.yaml deployed as stage local (infra/localstack/)
	AWS_ENDPOINT_URL=$(LOCALSTACK_ENDPOINT) $(LOCALSTACK) up $(BOOTSTRAP_ARGS)

local-stack-down: ## stop LocalStack and drop everything deployed in it
	$(LOCALSTACK) down

test-localstack: $(VENV)/.installed ## the emulator test suite against LocalStack (make local-stack first), through AWS_ENDPOINT_URL
	@AWS_ENDPOINT_URL=$(LOCALSTACK_ENDPOINT) $(LOCALSTACK) check
	AWS_ENDPOINT_URL=$(LOCALSTACK_ENDPOINT) AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
		TALLY_DEPLOY_TIMEOUT=300 $(CARGO) test -j$(JOBS) --workspace
