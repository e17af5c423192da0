#!/usr/bin/env bash
# The test command: build (the integration tests run the compiled services as real processes),
# make sure the tiny model set exists, run tap, and print one closing line "tap: N passed, N failed".
set -o pipefail
cd "$(dirname "$0")/.."
npx tsc -p . || { echo "tap: 0 passed, 1 failed"; exit 1; }
node dist/tools/gen-models.js --if-missing || { echo "tap: 0 passed, 1 failed"; exit 1; }
CI=true ./node_modules/.bin/tap "$@" </dev/null 2>&1 | tee .tap-out.txt
rc=$?
node tools/tap-summary.mjs .tap-out.txt
exit $rc
