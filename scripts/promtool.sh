#!/usr/bin/env bash
# Prints the path of a promtool binary, fetching it from Debian's prometheus package
# when there is none: only the binary is extracted (into build/tools), so no
# Prometheus server is installed or started on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v promtool >/dev/null; then command -v promtool; exit 0; fi
dest=build/tools
if [ ! -x "$dest/promtool" ]; then
  mkdir -p "$dest"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && (apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }))
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  cp "$tmp/x/usr/bin/promtool" "$dest/promtool"
fi
echo "$PWD/$dest/promtool"
