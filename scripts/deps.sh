#!/usr/bin/env bash
# Installs the Debian packages Basalt needs to build and test (and, for bench, the
# Node peers from npm), only when missing.
# Usage: scripts/deps.sh [build|test|bench|check-services]
#
# Server packages (nginx, PostgreSQL, Redis, PgBouncer, HAProxy, ...) are installed
# for the tests and benchmarks, which start their own instances on 127.0.0.1 under a
# temporary folder. Debian's packages enable a system service at install time, which
# would listen on every address after the next boot: every run disables and stops
# those units again (set BASALT_KEEP_SERVICES=1 to keep units you enabled yourself).
# `check-services` verifies that none is enabled or listening, as a test suite.
set -euo pipefail

# The packages that ship the server units (nginx-light's unit is in nginx-common,
# postgresql's in postgresql-common).
server_pkgs="nginx-common postgresql-common redis-server pgbouncer haproxy etcd-server patroni prometheus"

# server_units: the unit names those packages ship (templates excluded), one a line.
server_units() {
  local p
  for p in $server_pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || continue
    dpkg -L "$p" 2>/dev/null | grep -E '^/(usr/)?lib/systemd/system/[^/@]+\.(service|socket|timer)$' | xargs -rn1 basename
  done | sort -u
}

# server_initscripts: their SysV scripts (what runs at boot without systemd).
server_initscripts() {
  local p
  for p in $server_pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || continue
    dpkg -L "$p" 2>/dev/null | grep -E '^/etc/init\.d/[^/]+$' | xargs -rn1 basename
  done | sort -u
}

quiet_services() {
  [ "${BASALT_KEEP_SERVICES:-0}" = 1 ] && return 0
  local SUDO="" u
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  for u in $(server_units); do
    if [ "$(systemctl is-enabled "$u" 2>/dev/null)" = enabled ]; then
      echo "deps: disabling the system service $u (the tests start their own on 127.0.0.1)"
      $SUDO systemctl disable --quiet "$u" 2>/dev/null || true
    fi
    # Stopping needs a running systemd; without one there is nothing to stop.
    if [ -d /run/systemd/system ] && systemctl is-active --quiet "$u" 2>/dev/null; then
      $SUDO systemctl stop "$u" || true
    fi
  done
  for u in $(server_initscripts); do
    if ls /etc/rc[2-5].d/S??"$u" >/dev/null 2>&1; then
      echo "deps: disabling the boot script $u"
      $SUDO update-rc.d "$u" disable >/dev/null 2>&1 || true
    fi
  done
}

# check_services: one check per unit and boot script, and one for listeners; ends
# with "N passed, N failed".
check_services() {
  local pass=0 fail=0 u
  for u in $(server_units); do
    if [ "$(systemctl is-enabled "$u" 2>/dev/null)" = enabled ]; then
      echo "FAIL: $u is enabled"; fail=$((fail + 1))
    elif [ -d /run/systemd/system ] && systemctl is-active --quiet "$u" 2>/dev/null; then
      echo "FAIL: $u is running"; fail=$((fail + 1))
    else
      echo "ok: $u neither enabled nor running"; pass=$((pass + 1))
    fi
  done
  for u in $(server_initscripts); do
    if ls /etc/rc[2-5].d/S??"$u" >/dev/null 2>&1; then
      echo "FAIL: boot script $u starts at boot"; fail=$((fail + 1))
    else
      echo "ok: boot script $u does not start at boot"; pass=$((pass + 1))
    fi
  done
  # No server process listens on a non-loopback address (the tests' own bind 127.0.0.1).
  local public
  public=$(ss -H -ltnp 2>/dev/null | awk '$4 !~ /^(127\.|\[::1\]|\[::ffff:127\.)/' |
    grep -E '"(nginx|postgres|redis-server|pgbouncer|haproxy|etcd|patroni|prometheus)"' || true)
  if [ -n "$public" ]; then
    echo "FAIL: a server listens beyond loopback:"; echo "$public"; fail=$((fail + 1))
  else
    echo "ok: no server package listens beyond loopback"; pass=$((pass + 1))
  fi
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}

if [ "${1:-}" = check-services ]; then
  check_services
  exit
fi
build_pkgs="build-essential cmake pkg-config libh2o-evloop-dev libh2o-dev-common libwslay-dev
  libssl-dev libsqlite3-dev libsodium-dev libjansson-dev libpq-dev libhiredis-dev zlib1g-dev nodejs npm
  libvips-dev libcurl4-openssl-dev"
# Zip archives of user data exports (core/privacy.c) and of the backups API (libsodium-dev
# above also encrypts the continuous backup).
build_pkgs="$build_pkgs libarchive-dev"
test_pkgs="libcmocka-dev python3 python3-pytest python3-requests python3-yaml nodejs npm openssl clang clang-format
  postgresql postgresql-contrib pgbouncer redis-server redis-tools chromium fonts-dejavu-core python3-aiosmtpd
  postgresql-15 patroni etcd-server haproxy pgbackrest prometheus curl util-linux"
# make test: pytest-xdist runs an integration suite on several workers; GNU time gives
# each suite's CPU seconds.
test_pkgs="$test_pkgs python3-pytest-xdist time"
# The benchmark's peers: nginx, PostgreSQL (with pgbench) and Redis, started by the
# harness itself on loopback; never as system services.
bench_pkgs="wrk gnuplot-nox python3-requests curl nginx-light postgresql postgresql-contrib pgbouncer redis-server redis-tools
  nodejs npm haproxy"
# bench/realtime.sh's optional system-call counts (STRACE=1) and profile (PERF=FILE).
bench_pkgs="$bench_pkgs strace linux-perf"
want="$build_pkgs"
[ "${1:-build}" = test ] && want="$want $test_pkgs"
[ "${1:-build}" = bench ] && want="$want $bench_pkgs"
missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# node/npm may come from elsewhere (e.g. a preinstalled Node); accept a working binary.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=$(echo "$missing" | tr ' ' '\n' | grep -vx 'nodejs\|npm' | tr '\n' ' ')
fi
if [ -n "${missing// /}" ]; then
  echo "deps: installing:$missing"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  # Server packages must not start system services (they would listen on public
  # addresses): a policy-rc.d that refuses every start, for the length of the install.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
  if [ "$own_policy" -eq 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi
quiet_services
# libFuzzer and the sanitizer runtimes come with the compiler-rt of the installed clang.
if [ "${1:-build}" = test ] && command -v clang >/dev/null; then
  rt="libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev"
  if ! dpkg-query -W -f='${Status}' "$rt" 2>/dev/null | grep -q "install ok installed"; then
    echo "deps: installing $rt"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$rt" || true
  fi
fi
# The benchmark's Node peers, pinned by bench/peers/package-lock.json: installed when
# missing or older than the lock file.
if [ "${1:-build}" = bench ]; then
  peers="$(dirname "$0")/../bench/peers"
  if [ ! -d "$peers/node_modules" ] || [ "$peers/package-lock.json" -nt "$peers/node_modules" ]; then
    (cd "$peers" && npm ci --no-audit --no-fund --loglevel=error && touch node_modules)
  fi
fi
# The S3-compatible server of the file tests (s3rver, on Node), pinned by
# tests/s3/package-lock.json.
if [ "${1:-build}" = test ]; then
  s3="$(dirname "$0")/../tests/s3"
  if [ ! -d "$s3/node_modules" ] || [ "$s3/package-lock.json" -nt "$s3/node_modules" ]; then
    (cd "$s3" && npm ci --no-audit --no-fund && touch node_modules)
  fi
fi
