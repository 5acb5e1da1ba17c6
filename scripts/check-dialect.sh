#!/usr/bin/env bash
# ADR 0004: SQL that differs between the backends is written only in store/<backend>/
# and in the dialect table (src/rules/dialect.[ch]); src/backup/ is the embedded file's
# continuous backup (SQLite's WAL and its own connections: PostgreSQL is backed up with
# pgBackRest), so it speaks SQLite. This looks for backend-only
# functions and syntax anywhere else in src/ (comments aside) and ends with
# "N passed, N failed" (one check).
set -uo pipefail
cd "$(dirname "$0")/.."
pattern='json_each|json_group_array|json_extract|json_array_length|json_array\(|jsonb_[a-z_]+\(|RANDOM\(\)|random\(\)|ILIKE|IS (NOT )?DISTINCT FROM|pg_[a-z_]+\(|plpgsql|PARTITION (OF|BY)|INSERT OR (IGNORE|REPLACE)|ON CONFLICT|sqlite_[a-z_]+\(|PRAGMA |::jsonb|::text'
# Inside string literals only (C functions such as jansson's json_array() are fine).
hits=$(grep -rnE "\"[^\"]*($pattern)" src --include='*.c' --include='*.h' |
  grep -v '^src/store/' | grep -vE '^src/rules/dialect\.(c|h):' |
  grep -v '^src/backup/' |
  grep -vE '^[^:]+:[0-9]+:\s*(/\*|\*|//)' || true)
if [ -n "$hits" ]; then
  echo "backend-specific SQL outside store/ and rules/dialect:"
  echo "$hits"
  echo "0 passed, 1 failed"
  exit 1
fi
echo "ok: no backend-specific SQL outside store/ and rules/dialect"
echo "1 passed, 0 failed"
