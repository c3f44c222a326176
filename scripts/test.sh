#!/usr/bin/env bash
# The test command of the README. pytest's exit code 5 (no tests collected) fails here too.
set -uo pipefail
cd "$(dirname "$0")/.."
python -m ruff check anomalib_ncd tests benchmarks examples
ruff_status=$?
python -m pytest -q -p no:cacheprovider "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
if [ "$ruff_status" -ne 0 ]; then
  echo "ruff found problems: failing" >&2
  exit 1
fi
exit "$status"
