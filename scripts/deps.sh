#!/usr/bin/env bash
# Installs the Debian packages Basalt needs to build and test (and, for bench, the
# Node peers from npm), only when missing.
# Usage: scripts/deps.sh [build|test|bench]
set -euo pipefail
build_pkgs="build-essential cmake pkg-config libh2o-evloop-dev libh2o-dev-common libwslay-dev
  libssl-dev libsqlite3-dev libsodium-dev libjansson-dev"
test_pkgs="libcmocka-dev python3 python3-pytest python3-requests python3-yaml nodejs npm openssl clang clang-format"
# The benchmark's peers: nginx, PostgreSQL (with pgbench) and Redis, started by the
# harness itself on loopback; never as system services.
bench_pkgs="wrk gnuplot-nox python3-requests curl nginx-light postgresql postgresql-contrib redis-server redis-tools
  nodejs npm"
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
