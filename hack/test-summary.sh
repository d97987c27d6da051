#!/usr/bin/env bash
# Passes `go test -v` output through and ends with a one-line summary; keeps
# go test's exit status (use with `set -o pipefail`).
set -uo pipefail
awk '
  { print }
  /^--- PASS/ { pass++ }
  /^--- FAIL/ { fail++; failed = failed "\n  " $3 }
  /^--- SKIP/ { skip++ }
  END {
    printf "\n== e2e: %d passed, %d failed, %d skipped\n", pass, fail, skip
    if (fail) printf "== failed:%s\n", failed
  }'
