#!/usr/bin/env bash
# dbt's own tests, as a user would run them: land the bundled statement into a scratch
# warehouse, then `dbt build` — seeds, models, unit tests (next to the models), data tests
# (generic tests in tests/generic/) — and `dbt docs generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export BROKER_SYNC_DATA_DIR="$scratch/data"
export DBT_TARGET_PATH="$scratch/target" DBT_LOG_PATH="$scratch/logs"
export DO_NOT_TRACK=1 DBT_SEND_ANONYMOUS_USAGE_STATS=false
export IBKR_ACCOUNT_ID=6f1f7a2e-1d0c-4f55-9a35-0d3f2b7c9e11
IBKR_ACCOUNT_ID_UPSTREAM=U1234567 $BIN/flexsync extract --flex-file demo/flex_statement.xml
$BIN/dbt build --project-dir . --profiles-dir .
$BIN/dbt docs generate --project-dir . --profiles-dir . --quiet
echo "dbt build (unit + data tests) and dbt docs generate: ok"
