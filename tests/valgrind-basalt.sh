#!/usr/bin/env bash
# Runs build/basalt under valgrind memcheck; used as BASALT_BIN by `make valgrind`.
# Any memory error or definite leak makes the process exit 99, which the tests see.
here="$(cd "$(dirname "$0")/.." && pwd)"
exec valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
  --show-leak-kinds=definite --suppressions="$here/tests/valgrind.supp" "$here/build/basalt" "$@"
