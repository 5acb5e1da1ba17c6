# The two commands: `make run` and `make test`. Everything else is a helper.
# NOBUILD=1: the suites below skip their build step (make test builds once, then runs
# suites side by side, which must not configure one build folder at the same time).
JOBS ?= $(shell nproc)
B = $(if $(NOBUILD),,build)
BA = $(if $(NOBUILD),,build-asan)
BUILD ?= build
PY ?= /usr/bin/python3

.PHONY: run test deps deps-test build build-asan unit unit-asan integration integration-asan integration-pg js js-deps js-pg crash-pg chaos chaos-smoke integration-cluster fuzz fuzz-smoke crash valgrind security format format-check bench clean

run: deps build
	mkdir -p basalt_data
	./$(BUILD)/basalt serve --http=127.0.0.1:8090 --dir=./basalt_data

deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBASALT_WERROR=ON >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

build-asan:
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DBASALT_WERROR=ON -DBASALT_SANITIZE=ON >/dev/null
	cmake --build build-asan -j $(JOBS)

unit: $(B)
	cd $(BUILD) && ctest --output-on-failure

unit-asan: $(BA)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure

integration: $(B)
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) -m pytest -q tests/integration

# The same suite against the binary built with ASan+UBSan: a leak or an error
# makes the server exit non-zero, which the tests check.
integration-asan: $(BA)
	BASALT_BIN=$(CURDIR)/build-asan/basalt ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(PY) -m pytest -q tests/integration

# The SDK from npm, once (js and js-pg may run side by side).
js-deps:
	cd tests/js && (test -d node_modules || npm install --no-audit --no-fund --silent)

js: $(B) js-deps
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt node tests/js/sdk_scenario.mjs

# The integration suite and the JS SDK scenario on PostgreSQL through PgBouncer: every
# server gets a database of its own on the tests' PostgreSQL (scripts/pg-env.sh; make
# test starts it and sets BASALT_TEST_PG_URL / BASALT_TEST_PGB_URL).
integration-pg: $(B)
	BASALT_TEST_BACKEND=postgres BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) -m pytest -q tests/integration

js-pg: $(B) js-deps
	db=bt_js_$$$$; psql "$$BASALT_TEST_PG_URL" -qAt -c "CREATE DATABASE $$db" && \
	BASALT_TEST_DB="$${BASALT_TEST_PGB_URL%/*}/$$db" BASALT_TEST_DB_LISTEN="$${BASALT_TEST_PG_URL%/*}/$$db" \
	  BASALT_BIN=$(CURDIR)/$(BUILD)/basalt node tests/js/sdk_scenario.mjs

# The server under valgrind memcheck for the HTTP suites (slow: not in `make test`).
valgrind: build
	BASALT_START_TIMEOUT=120 BASALT_BIN=$(CURDIR)/tests/valgrind-basalt.sh $(PY) -m pytest -q tests/integration/test_health_and_errors.py \
	  tests/integration/test_records.py tests/integration/test_batch.py

# The security battery: injection, traversal, multipart, framing, tokens, the
# authorization matrix, the adversarial review's findings (test_sec_*.py), plus the
# fuzz smoke runs.
security: build
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) -m pytest -q tests/integration/test_security.py \
	  tests/integration/test_abuse.py tests/integration/test_ratelimit.py \
	  tests/integration/test_auth.py tests/integration/test_rules_matrix.py tests/integration/test_rules_context.py \
	  $(wildcard tests/integration/test_sec_*.py)
	scripts/fuzz.sh --smoke

# libFuzzer drivers for every parser (clang, ASan+UBSan): FUZZ_SECONDS each.
FUZZ_SECONDS ?= 60
fuzz: deps deps-test
	scripts/fuzz.sh $(FUZZ_SECONDS)

fuzz-smoke:
	scripts/fuzz.sh --smoke

# Crash durability: SIGKILL the server KILLS times under concurrent writers.
KILLS ?= 50
crash: $(B)
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) tests/chaos/crash_durability.py $(KILLS)

crash-pg: $(B)
	BASALT_TEST_BACKEND=postgres BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) tests/chaos/crash_durability.py $(KILLS)

# Runs every suite; the summary line at the end counts them all.
test: deps deps-test
	@scripts/test-all.sh

# The chaos suite on the local cluster (deploy/local/cluster.sh: Patroni primary +
# replica, PgBouncer, Redis, HAProxy, 2 Basalt instances): instance SIGKILL, replica and
# primary loss, rolling restart, Redis loss. chaos-smoke is the short version for make test.
chaos: $(B)
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) -m pytest -q -s tests/cluster

chaos-smoke: $(B)
	CHAOS_SMOKE=1 BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) -m pytest -q tests/cluster

# The integration suite with every test server made of 2 Basalt instances on one
# PostgreSQL database behind HAProxy (BASALT_TEST_TOPOLOGY=cluster; needs the tests'
# PostgreSQL: scripts/pg-env.sh, as integration-pg).
integration-cluster: $(B)
	BASALT_TEST_TOPOLOGY=cluster BASALT_TEST_BACKEND=postgres BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) -m pytest -q tests/integration

# Benchmarks (not part of make test): bench/run.sh --quick for a short run.
bench: deps
	bench/run.sh

# The harness in seconds (make test): every system and scenario once on tiny data,
# after checking that all systems answer the scenarios alike; fails on any error.
bench-smoke: $(B)
	scripts/deps.sh bench
	BENCH_BUILD=$(CURDIR)/$(BUILD) $(PY) bench/harness.py --smoke

# The committed .clang-format is the house style; make test checks it.
FORMAT_FILES = $(shell git ls-files 'src/*.c' 'src/*.h' 'tests/unit/*.c' 'tests/fuzz/*.c' 'bench/*.c')
format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf build build-asan build-fuzz build-release
