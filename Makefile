# Sterling — the two commands the README promises:
#   make demo   set everything up from nothing, then run the three-hospital scenario
#   make test   set everything up, then run the whole test suite
# Set-up is idempotent: stamps under .make-stamps/ skip work already done.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .make-stamps
PYTEST_ARGS ?=

.PHONY: setup demo test lint-python typecheck fuzz chaos soak lint gas artifacts bench-crypto bench-dp bench-api bench-infer bench-score bench-search bench-large bench-scale bench-models clean

setup: $(STAMPS)/python $(STAMPS)/npm $(STAMPS)/chromium $(STAMPS)/postgresql

$(STAMPS)/python: pyproject.toml
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

$(STAMPS)/npm: package.json package-lock.json
	@mkdir -p $(STAMPS)
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Debian's Chromium drives the browser tests (tests/web); Playwright's own browser download is not
# used, so nothing is fetched at test time. Installing needs root (as in CI).
CHROMIUM ?= /usr/bin/chromium
$(STAMPS)/chromium:
	@mkdir -p $(STAMPS)
	test -x $(CHROMIUM) || { apt-get update && apt-get install -y --no-install-recommends chromium; } \
		|| { echo "install Debian's chromium as root: apt-get install chromium" >&2; exit 1; }
	@touch $@

# Debian's PostgreSQL server binaries: tests and bench-scale start throw-away clusters with them
# (initdb + pg_ctl in a temporary folder, tests/postgres.py); no server is left running.
$(STAMPS)/postgresql:
	@mkdir -p $(STAMPS)
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update && apt-get install -y --no-install-recommends postgresql; } \
		|| { echo "install Debian's postgresql as root: apt-get install postgresql" >&2; exit 1; }
	@touch $@

demo: setup
	$(VENV)/bin/sterling demo

# The whole suite on SQLite, then the chain index and gateway suites again on PostgreSQL.
POSTGRES_SUITES := tests/gateway tests/oracle/test_index_leases.py tests/oracle/test_competition_index.py \
	--ignore=tests/gateway/test_up.py --ignore=tests/gateway/test_postgres.py
test: setup $(STAMPS)/lint lint-python typecheck
	STERLING_CHROMIUM=$(CHROMIUM) $(PY) -m pytest --durations=20 $(PYTEST_ARGS)
	STERLING_TEST_DATABASE=postgresql $(PY) -m pytest -q -p no:cacheprovider $(POSTGRES_SUITES)

# Python static checks, both configured in pyproject.toml and run by `make test` before pytest.
# Lint: pyflakes, pycodestyle, isort, bugbear, pyupgrade, simplify (formatting is not enforced).
PY_PACKAGES := marketplace enclave_worker oracle sterling benchmarks
lint-python: setup
	$(PY) -m ruff check $(PY_PACKAGES)

# Types: mypy --strict over the same packages (the list is `files` in [tool.mypy]).
typecheck: setup
	$(PY) -m mypy

# The contracts' stateful property test at 50,000 random steps (make test runs 2,000).
fuzz: setup
	STERLING_STATEFUL_STEPS=50000 $(PY) -m pytest tests/contracts/test_stateful.py -q -p no:cacheprovider
	STERLING_COMPETITION_EXAMPLES=200 STERLING_COMPETITION_STEPS=100 $(PY) -m pytest tests/contracts/test_competition_market_stateful.py -q -p no:cacheprovider

# Kill components with SIGKILL at seeded random moments while 24 jobs run on two workers, then
# check no fork, no stranded job, value conserved, audit log and index (docs/jobs.md). The seed
# is random unless CHAOS_SEED is set; it is printed first, so a failing run can be replayed.
# make test runs a short fixed-seed version (tests/benchmarks/test_chaos.py).
CHAOS_ARGS ?=
chaos: setup
	$(PY) -m benchmarks.chaos --jobs 24 --kills 10 $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) $(CHAOS_ARGS)

# Hold 200 event streams and 100 slow uploads (completed, abandoned, stalled into a 408) with 200
# reads/s for 60 s against sterling up (anvil, child process); last line: health p99, errors, open
# fds and staging files, which must be back at their baseline. Shorter: SOAK_ARGS="--seconds 10".
# make test runs a short version (tests/benchmarks/test_soak.py).
SOAK_ARGS ?=
soak: setup
	$(PY) -m benchmarks.soak $(SOAK_ARGS)

# Static analysis of the contracts with Slither, from its own venv (slither-analyzer pins web3 < 8,
# which the project's venv cannot have), through the solcjs wrapper; fails on any medium or high
# finding that is not acknowledged in the source with a written reason (docs/contracts.md).
LINT_VENV := .venv-lint
$(STAMPS)/lint: $(STAMPS)/npm
	@mkdir -p $(STAMPS)
	test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install --quiet slither-analyzer==0.11.6
	@touch $@

lint: setup $(STAMPS)/lint
	$(PY) -m marketplace.compile --slither-input build/slither-input.json
	$(LINT_VENV)/bin/slither build/slither-input.json --compile-force-framework solc-json \
		--solc contracts/bin/solc --filter-paths node_modules --exclude-informational --fail-medium

# Gas per external function on the embedded chain; last line is the lifecycle summary.
gas: setup
	$(PY) -m benchmarks.gas_report

# DP vs non-private epoch time (MLP, CNN; batch 64 and 256) and the enclave job overhead.
bench-dp: setup
	$(PY) -m benchmarks.bench_dp

# Ciphertext format vs raw AES-256-GCM on a 1 GiB dataset; last line is the summary.
bench-crypto: setup
	$(PY) -m benchmarks.bench_crypto --size-mib 1024

# Gateway latency: GET /api/datasets at 200 req/s for 60 s with 1,000 datasets indexed and a job
# training (sterling up on anvil in a child process); last line is the summary.
bench-api: setup
	$(PY) -m benchmarks.bench_api

# Private inference: one HE-friendly model (64 → 32 square → 10, digits) served by native torch (one
# row at a time, batched), TenSEAL CKKS (the benchmark-only extra `bench`, installed here) and the
# Sterling end-to-end path; three interleaved rounds, medians; last line is the summary.
# BENCH_INFER_ARGS="--sterling none" measures native torch and HE only.
BENCH_INFER_ARGS ?=
bench-infer: setup
	$(PY) -c "import tenseal" 2>/dev/null || $(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m benchmarks.bench_infer $(BENCH_INFER_ARGS)

# Scoring throughput of the evaluator enclave: the digits CNN on a 10,000-row test set (docs/competitions.md).
bench-score: setup
	$(PY) -m benchmarks.bench_score

# The dataset search (datasheets: free text, tags, sorting) over 10,000 listings against the plain list (docs/datasheets.md).
bench-search: setup
	$(PY) -m benchmarks.bench_search

# DP training on 1 GiB of rows through a trainer enclave whose memory budget (256 MiB) cannot hold
# them: rows scanned from the host window by window, against the same rows in memory; last line is
# the summary (docs/enclave-protocol.md, "Datasets larger than the enclave"). Part (d) of bench-scale.
BENCH_LARGE_ARGS ?=
bench-large: setup
	$(PY) -m benchmarks.bench_large_dataset $(BENCH_LARGE_ARGS)

# Scale-out (issue 17): keymanager, indexer (PostgreSQL), gateway and two workers as processes of
# their own on anvil; (a) pickup with 100 and 10,000 past jobs, (b) gateway p99 at 200 req/s on
# PostgreSQL while a job trains, (c) the 2-worker speed-up, (d) bench-large; docs/operations.md.
BENCH_SCALE_ARGS ?=
bench-scale: setup
	$(PY) -m benchmarks.bench_scale $(BENCH_SCALE_ARGS)

# ResNet-32 and VGG-9 on 50,000 synthetic 32x32x3 images: DP against non-private epoch time, the
# enclave job against direct training, ResNet-32 inference through the serving enclave; last line
# is the summary (docs/models.md, "Image networks").
BENCH_MODELS_ARGS ?=
bench-models: setup
	$(PY) -m benchmarks.bench_models $(BENCH_MODELS_ARGS)

# Recompile the contracts and rewrite the committed ABI + bytecode artifacts.
artifacts: setup
	$(PY) -m marketplace.compile

clean:
	rm -rf $(STAMPS) .pytest_cache .hypothesis screenshots build
