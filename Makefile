# Tally — the commands a newcomer needs. Builds are sized for 2 cores.
CARGO ?= cargo
JOBS  ?= 2
PORT  ?= 3000
DB    ?= data/tally.db
VENV  ?= .venv
PYTHON ?= python3

.PHONY: run test lint fmt bench emulator build check-template help

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
	$(CARGO) test -j$(JOBS) --workspace

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
	bash scripts/bench-load.sh
