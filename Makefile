# conveyor: `make demo` runs the main flow, `make test` runs every check, `make bench` measures.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# Playwright (test extra) drives Debian's chromium; it must never fetch a browser build.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: demo demo-sqs test check lint typecheck unit integration e2e faults bench clean image push buildx-builder chromium postgres

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e .
	touch $@

$(VENV)/.test: $(VENV)/.base pyproject.toml
	$(PIP) install -e '.[test]'
	touch $@

$(VENV)/.bench: $(VENV)/.test pyproject.toml
	$(PIP) install -e '.[test,bench]'
	touch $@

demo: $(VENV)/.base
	bash scripts/demo.sh

# The same flow on SQS: a local moto server (from the test extra) stands in for AWS.
demo-sqs: $(VENV)/.test
	bash scripts/demo_sqs.sh

lint: $(VENV)/.test
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(VENV)/.test
	$(VENV)/bin/mypy src

# The tiers, each on its own: unit (no server, no subprocess worker), integration (real
# SQLite files, a real PostgreSQL, moto's SQS server), e2e (real `conveyor` processes),
# faults (real kills, full disks, hostile rows). `make test` runs them all.
unit: $(VENV)/.test
	$(PY) -m pytest tests/unit -q

integration: $(VENV)/.test postgres
	$(PY) -m pytest tests/integration -q

e2e: $(VENV)/.test chromium postgres
	$(PY) -m pytest tests/e2e -q

faults: $(VENV)/.test postgres
	$(PY) -m pytest tests/faults -q

# The quick loop while editing: lint, types and the unit tier (under a minute).
check: lint typecheck unit

# $(call apt_install,CHECK,PACKAGE,WHY,WHAT): unless the command CHECK succeeds, say what
# is installed and why, then install Debian's PACKAGE with apt-get (as root: `make test`
# never runs sudo itself); when it cannot (not root, no apt-get, apt-get failed), one line
# says what to run instead. No commas in the arguments.
apt_install = @if $(1) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "conveyor: $(3) needs Debian's $(2); install it with: sudo apt-get install $(2)" >&2; exit 1; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "conveyor: $(3) needs $(2) and there is no apt-get here: install $(2) with this system's package manager" >&2; exit 1; \
	else \
		echo "conveyor: $(3) needs Debian's $(2): installing it now as root ($(4)): apt-get install $(2)"; \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive \
			apt-get install -q -y --no-install-recommends $(2); } || \
		{ echo "conveyor: apt-get could not install $(2) (see above); $(3) needs it: sudo apt-get install $(2)" >&2; exit 1; }; \
	fi

# The dashboard's browser test drives Debian's chromium (never a downloaded browser).
chromium:
	$(call apt_install,command -v chromium,chromium,the dashboard's browser test,about 25 packages and 414 MB on a bare Debian)

# The ledger's tests start a real PostgreSQL server (Debian's) on 127.0.0.1.
postgres:
	$(call apt_install,ls /usr/lib/postgresql/*/bin/initdb,postgresql,the ledger's test suite (a real PostgreSQL server on 127.0.0.1),the server and its client)

test: lint typecheck $(VENV)/.test chromium postgres
	$(PY) -m pytest -q

bench: $(VENV)/.bench
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache demo bench-data

# Container image (deploy/Dockerfile), multi-arch through buildx. `make image` builds both
# platforms into an OCI archive in dist/; `make push` logs in to Amazon ECR, creates the
# repository if needed (immutable tags, scan on push) and pushes (tutorial Steps 5-6).
AWS_REGION ?= $(shell aws configure get region)
ACCOUNT_ID ?= $(shell aws sts get-caller-identity --query Account --output text)
REPO       ?= conveyor
TAG        ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
PLATFORMS  ?= linux/amd64,linux/arm64
BUILDER    ?= conveyor-builder
REGISTRY    = $(ACCOUNT_ID).dkr.ecr.$(AWS_REGION).amazonaws.com
BUILDX      = docker buildx build --builder $(BUILDER) --platform $(PLATFORMS) -f deploy/Dockerfile

buildx-builder:
	docker buildx inspect $(BUILDER) >/dev/null 2>&1 || \
		docker buildx create --name $(BUILDER) --driver docker-container --bootstrap

image: buildx-builder
	mkdir -p dist
	$(BUILDX) -t $(REPO):$(TAG) --output type=oci,dest=dist/$(REPO)-$(TAG).oci.tar .

push: buildx-builder
	aws ecr describe-repositories --region $(AWS_REGION) --repository-names $(REPO) >/dev/null 2>&1 || \
		aws ecr create-repository --region $(AWS_REGION) --repository-name $(REPO) \
			--image-tag-mutability IMMUTABLE --image-scanning-configuration scanOnPush=true
	aws ecr get-login-password --region $(AWS_REGION) | \
		docker login --username AWS --password-stdin $(REGISTRY)
	$(BUILDX) -t $(REGISTRY)/$(REPO):$(TAG) --push .
	@echo "pushed $(REGISTRY)/$(REPO):$(TAG)"
