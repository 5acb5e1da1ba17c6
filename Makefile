# The two commands: `make run` and `make test`. Everything else is a helper.
# NOBUILD=1: the suites below skip their build step (make test builds once, then runs
# suites side by side, which must not configure one build folder at the same time).
JOBS ?= $(shell nproc)
B = $(if $(NOBUILD),,build)
BA = $(if $(NOBUILD),,build-asan)
BUILD ?= build
PY ?= /usr/bin/python3
# PYTEST_JOBS=N (N > 1): an integration suite on N pytest-xdist workers, whole files per
# worker (a module's shared server stays one server). Unset or 1: one process.
XDIST = $(if $(filter-out 0 1,$(PYTEST_JOBS)),-n $(PYTEST_JOBS) --dist loadfile)

.PHONY: web browser browser-pg web-deps taskmanager
.PHONY: run test deps deps-test build build-asan unit unit-asan integration integration-asan integration-pg integration-redis bench-redis js js-deps js-pg js-instances js-files s3-deps integration-files bench-files crash-pg fuzz fuzz-smoke crash valgrind security format format-check bench clean js-jobs js-jobs-pg bench-jobs chaos chaos-smoke integration-cluster integration-pg-complement cluster-files bench-shop bench-smoke bench-smoke-harness bench-smoke-shop bench-cluster

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
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) -m pytest -q $(XDIST) tests/integration

# The same suite against the binary built with ASan+UBSan: a leak or an error
# makes the server exit non-zero, which the tests check.
integration-asan: $(BA)
	BASALT_BIN=$(CURDIR)/build-asan/basalt ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(PY) -m pytest -q $(XDIST) tests/integration

# The SDK from npm, once (js and js-pg may run side by side).
# Errors of npm show (no --silent): a failing install names its cause. The npm installs
# of the dashboard, the example and the browser tests take a lock: suites that run side
# by side may ask for them at once.
js-deps:
	cd tests/js && (test -d node_modules || npm ci --no-audit --no-fund --loglevel=error)

js: $(B) js-deps
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt node tests/js/sdk_scenario.mjs

# pb.backups through the SDK (SQLite: the backups API archives the embedded database).
.PHONY: js-backups integration-backup
js-backups: $(B) js-deps
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt node tests/js/sdk_backups.mjs

# Continuous backup, point-in-time restore and the backups API (SQLite only).
integration-backup: $(B)
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) -m pytest -q tests/integration/test_backup.py

# File fields with the real SDK (FormData, File/Blob objects, batch, thumbnails, file tokens).
js-files: $(B) js-deps
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt node tests/js/sdk_files.mjs

# The file tests on S3 (s3rver from npm, tests/s3, installed from its lock) and locally.
s3-deps:
	cd tests/s3 && (test -d node_modules || npm ci --no-audit --no-fund)

# File downloads and thumbnails against nginx on the same files (docs/performance.md).
bench-files: $(B)
	BENCH_BUILD=$(CURDIR)/$(BUILD) $(PY) bench/files.py

integration-files: $(B) s3-deps
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) -m pytest -q tests/integration/test_files.py tests/integration/test_files_s3.py

# The integration suite and the JS SDK scenario on PostgreSQL through PgBouncer: every
# server gets a database of its own on the tests' PostgreSQL (scripts/pg-env.sh; make
# test starts it and sets BASALT_TEST_PG_URL / BASALT_TEST_PGB_URL).
integration-pg: $(B)
	BASALT_TEST_BACKEND=postgres BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) -m pytest -q $(XDIST) tests/integration

# The SDK's mail flows, crons and settings against an SMTP server the script starts.
js-jobs: $(B) js-deps
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt node tests/js/sdk_jobs.mjs

js-jobs-pg: $(B) js-deps
	db=bt_jsjobs_$$$$; psql "$$BASALT_TEST_PG_URL" -qAt -c "CREATE DATABASE $$db" && \
	BASALT_TEST_DB="$${BASALT_TEST_PGB_URL%/*}/$$db" BASALT_TEST_DB_LISTEN="$${BASALT_TEST_PG_URL%/*}/$$db" \
	  BASALT_BIN=$(CURDIR)/$(BUILD)/basalt node tests/js/sdk_jobs.mjs

# Jobs per second through the durable queue (SQLite; BENCH_DB=postgres://... for PostgreSQL).
bench-jobs: $(B)
	$(PY) bench/jobs_bench.py --bin $(CURDIR)/$(BUILD)/basalt $(if $(BENCH_DB),--db $(BENCH_DB))

# Redis shared state (tests/integration/test_redis_*.py): they start their own
# redis-server; the two-instance tests need PostgreSQL, started here when
# BASALT_TEST_PG_URL is not set (and stopped afterwards).
integration-redis: $(B)
	@if [ -n "$$BASALT_TEST_PG_URL" ]; then \
	  BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) -m pytest -q tests/integration/test_redis_ratelimit.py tests/integration/test_redis_multi.py; \
	else \
	  d=$$(mktemp -d /tmp/basalt-redis-pg.XXXXXX); eval "$$(scripts/pg-env.sh start $$d)"; \
	  BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) -m pytest -q tests/integration/test_redis_ratelimit.py tests/integration/test_redis_multi.py; \
	  rc=$$?; scripts/pg-env.sh stop $$d >/dev/null; rm -rf $$d; exit $$rc; \
	fi

# The added cost of Redis per request (docs/redis.md), not a test.
bench-redis: $(B)
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) bench/redis_cost.py 10 3
	@if [ -n "$$BASALT_TEST_PG_URL" ]; then BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) bench/redis_l2_cost.py 1000; \
	else echo "bench/redis_l2_cost.py skipped: it needs BASALT_TEST_PG_URL"; fi

js-pg: $(B) js-deps
	db=bt_js_$$$$; psql "$$BASALT_TEST_PG_URL" -qAt -c "CREATE DATABASE $$db" && \
	BASALT_TEST_DB="$${BASALT_TEST_PGB_URL%/*}/$$db" BASALT_TEST_DB_LISTEN="$${BASALT_TEST_PG_URL%/*}/$$db" \
	  BASALT_BIN=$(CURDIR)/$(BUILD)/basalt node tests/js/sdk_scenario.mjs

# The SDK against two instances on one PostgreSQL database behind a round-robin proxy
# (needs BASALT_TEST_PG_URL; skipped without it).
js-instances: $(B) js-deps
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt node tests/js/sdk_instances.mjs

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
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) -m pytest -q -s tests/cluster/test_chaos.py

chaos-smoke: $(B)
	CHAOS_SMOKE=1 BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) -m pytest -q tests/cluster/test_chaos.py

# Files and jobs on a cluster of its own (2 instances, files in s3rver behind a SigV4
# check): upload on A served by B, each job run once, a SIGKILLed instance's job
# retried by the other, a cron once per tick. About 2-3 minutes.
cluster-files: $(B) s3-deps
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) -m pytest -q -s tests/cluster/test_cluster_files_jobs.py

# The integration suite with every test server made of 2 Basalt instances on one
# PostgreSQL database behind HAProxy (BASALT_TEST_TOPOLOGY=cluster; needs the tests'
# PostgreSQL: scripts/pg-env.sh, as integration-pg).
integration-cluster: $(B)
	BASALT_TEST_TOPOLOGY=cluster BASALT_TEST_BACKEND=postgres BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) -m pytest -q $(XDIST) tests/integration

# On one PostgreSQL instance, exactly the tests that integration-cluster skips or
# expects to fail (the difference of the two runs' static skips, from conftest.py):
# with integration-cluster, every test keeps its PostgreSQL coverage (make test).
integration-pg-complement: $(B)
	@d=$$(mktemp -d) && \
	BASALT_TEST_TOPOLOGY=cluster BASALT_TEST_BACKEND=postgres BASALT_BIN=$(CURDIR)/$(BUILD)/basalt BASALT_TEST_LIST_SKIPPED=$$d/cluster \
	  $(PY) -m pytest -q -p no:cacheprovider --collect-only tests/integration >$$d/log 2>&1 && \
	BASALT_TEST_BACKEND=postgres BASALT_BIN=$(CURDIR)/$(BUILD)/basalt BASALT_TEST_LIST_SKIPPED=$$d/single \
	  $(PY) -m pytest -q -p no:cacheprovider --collect-only tests/integration >>$$d/log 2>&1 || { cat $$d/log; rm -rf $$d; exit 1; }; \
	sort $$d/cluster >$$d/c; sort $$d/single >$$d/s; comm -23 $$d/c $$d/s >$$d/only; \
	echo "single-instance PostgreSQL run of the $$(wc -l <$$d/only) tests the cluster run skips:"; cat $$d/only; \
	if [ -s $$d/only ]; then BASALT_TEST_ONLY=$$d/only BASALT_TEST_BACKEND=postgres BASALT_BIN=$(CURDIR)/$(BUILD)/basalt \
	  $(PY) -m pytest -q tests/integration; rc=$$?; else echo "0 passed"; rc=0; fi; rm -rf $$d; exit $$rc

# Benchmarks (not part of make test): bench/run.sh --quick for a short run.
bench: deps
	bench/run.sh

# Plan 003's shop at its peak hour (generated data, both backends, then a cgroup of
# 1 CPU and 512 MB): SHOP_SCALE (default 17600: about 10 GB on SQLite, 15 on
# PostgreSQL; 0.57 and 0.85 MB per unit were measured). Takes hours on a loaded machine.
bench-shop: deps
	scripts/deps.sh bench
	cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBASALT_TESTS=OFF >/dev/null
	cmake --build build-release -j "$$(nproc)" >/dev/null
	$(PY) bench/shop.py --scale $(or $(SHOP_SCALE),17600) --cgroup

# The harness in seconds (make test): every system and scenario once on tiny data,
# after checking that all systems answer the scenarios alike; fails on any error.
bench-smoke: bench-smoke-harness bench-smoke-shop

# The cluster systems alone (HAProxy + 1/2 instances on PostgreSQL + Redis, next to
# embedded and basalt_pg), quick, with the report in bench/results/cluster-<date>/.
bench-cluster: deps
	scripts/deps.sh bench
	cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBASALT_TESTS=OFF >/dev/null
	cmake --build build-release -j "$$(nproc)" >/dev/null
	$(PY) bench/harness.py --quick --systems basalt,basalt_pg,basalt_pg_redis,basalt_pg_l2,basalt_cluster1,basalt_cluster2 \
	  --out bench/results/cluster-$$(date -u +%Y-%m-%d-%H%M)

bench-smoke-harness: $(B)
	scripts/deps.sh bench
	BENCH_BUILD=$(CURDIR)/$(BUILD) $(PY) bench/harness.py --smoke

bench-smoke-shop: $(B)
	scripts/deps.sh bench
	BENCH_BUILD=$(CURDIR)/$(BUILD) $(PY) bench/shop.py --smoke

# The committed .clang-format is the house style; make test checks it.
FORMAT_FILES = $(shell git ls-files 'src/*.c' 'src/*.h' 'tests/unit/*.c' 'tests/fuzz/*.c' 'bench/*.c')
format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf build build-asan build-fuzz build-release

# The dashboard (web/admin: Preact + htm + uPlot + the SDK, bundled by esbuild from
# package-lock.json) into $(BUILD)/web/admin, beside the binary, where `basalt serve`
# finds it (--admin-dir=auto). Rebuilt when its sources change; part of make build.
WEB_SRC = $(shell find web/admin/src -type f 2>/dev/null) web/admin/build.mjs web/admin/package-lock.json
web: $(BUILD)/web/admin/index.html
build: web
$(BUILD)/web/admin/index.html: $(WEB_SRC)
	cd web/admin && flock /tmp/basalt-npm.lock sh -c '[ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund --loglevel=error'
	cd web/admin && node build.mjs $(CURDIR)/$(BUILD)/web/admin
# The task manager example's page (examples/taskmanager/pb_public/app.js).
examples/taskmanager/pb_public/app.js: examples/taskmanager/src/app.js examples/taskmanager/package-lock.json
	cd examples/taskmanager && flock /tmp/basalt-npm.lock sh -c '[ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund --loglevel=error'
	cd examples/taskmanager && npm run build
taskmanager: examples/taskmanager/pb_public/app.js

# The dashboard and the task manager in Debian's Chromium (playwright-core drives it;
# no browser download): ends with "N passed, N failed". Screenshots in
# $(BUILD)/browser-shots (BROWSER_SHOTS=dir to change).
web-deps:
	cd tests/browser && flock /tmp/basalt-npm.lock sh -c '[ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund --loglevel=error'
browser: $(B) taskmanager web-deps
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt BROWSER_SHOTS=$${BROWSER_SHOTS:-$(CURDIR)/$(BUILD)/browser-shots} node tests/browser/run.mjs
# The same on PostgreSQL through PgBouncer (BASALT_TEST_PG_URL / BASALT_TEST_PGB_URL, as js-pg).
browser-pg: $(B) taskmanager web-deps
	db=bt_browser_$$$$; psql "$$BASALT_TEST_PG_URL" -qAt -c "CREATE DATABASE $$db" && \
	BASALT_TEST_DB="$${BASALT_TEST_PGB_URL%/*}/$$db" BASALT_BIN=$(CURDIR)/$(BUILD)/basalt \
	  BROWSER_SHOTS=$${BROWSER_SHOTS:-$(CURDIR)/$(BUILD)/browser-shots-pg} node tests/browser/run.mjs

# The JS SDK scenario through a local cluster: tests/cluster/basalt_cluster.py stands in
# for the binary the scenario starts, so its `basalt serve` is 2 instances + Redis +
# HAProxy (the integration suite's cluster topology) on one database of the tests'
# PostgreSQL (BASALT_TEST_PG_URL / BASALT_TEST_PGB_URL, as js-pg).
.PHONY: js-cluster
js-cluster: $(B) js-deps
	db=bt_jscl_$$$$; psql "$$BASALT_TEST_PG_URL" -qAt -c "CREATE DATABASE $$db" && \
	BASALT_TEST_DB="$${BASALT_TEST_PGB_URL%/*}/$$db" BASALT_TEST_DB_LISTEN="$${BASALT_TEST_PG_URL%/*}/$$db" \
	  BASALT_REAL_BIN=$(CURDIR)/$(BUILD)/basalt BASALT_BIN=$(CURDIR)/tests/cluster/basalt_cluster.py \
	  node tests/js/sdk_scenario.mjs

# The cost of answering a write once its invalidation is published (ADR 0015), not a test.
.PHONY: bench-redis-wait
bench-redis-wait: $(B)
	BASALT_BIN=$(CURDIR)/$(BUILD)/basalt $(PY) bench/redis_write_wait.py 300
