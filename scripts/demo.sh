#!/usr/bin/env bash
# make demo: the whole sync on the bundled statement, against a local fake Wealthfolio and
# (when Debian's prometheus-pushgateway is installed) a local Pushgateway. No credentials,
# nothing leaves 127.0.0.1. Leaves a warehouse to query in data/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DEMO_DIR=${DEMO_DIR:-data/demo}
ACCOUNT_UUID=6f1f7a2e-1d0c-4f55-9a35-0d3f2b7c9e11
PASSWORD=demo-password-not-a-secret
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"

wf_port=$($BIN/python scripts/free_port.py)
$BIN/python -m fakes.wealthfolio --host 127.0.0.1 --port "$wf_port" \
  --password "$PASSWORD" --account-id "$ACCOUNT_UUID" --account-currency GBP \
  >"$DEMO_DIR/fake-wealthfolio.log" 2>&1 &
pids+=($!)

push_url=""
if command -v prometheus-pushgateway >/dev/null 2>&1; then
  pg_port=$($BIN/python scripts/free_port.py)
  prometheus-pushgateway --web.listen-address="127.0.0.1:$pg_port" \
    --persistence.file="$DEMO_DIR/pushgateway.data" \
    >"$DEMO_DIR/pushgateway.log" 2>&1 &
  pids+=($!)
  push_url="http://127.0.0.1:$pg_port"
else
  echo "(prometheus-pushgateway not installed: the metrics are printed instead of pushed)"
fi

for _ in $(seq 1 50); do
  if curl -fsS "http://127.0.0.1:$wf_port/api/v1/healthz" >/dev/null 2>&1 &&
     { [ -z "$push_url" ] || curl -fsS "$push_url/-/ready" >/dev/null 2>&1; }; then
    break
  fi
  sleep 0.2
done

export BROKER_SYNC_DATA_DIR="$DEMO_DIR"
export IBKR_ACCOUNT_ID_UPSTREAM=U1234567
export IBKR_ACCOUNT_ID=$ACCOUNT_UUID
export WF_BASE_URL="http://127.0.0.1:$wf_port"
export WF_PASSWORD=$PASSWORD
export WF_SESSION_PATH="$DEMO_DIR/.wf-session"
export PUSHGATEWAY_URL="$push_url"

echo "== flexsync sync --flex-file demo/flex_statement.xml"
set +e
$BIN/flexsync sync --flex-file demo/flex_statement.xml
code=$?
set -e
echo "== exit code $code"
echo
echo "== flexsync status"
$BIN/flexsync status
echo
echo "== marts.fct_activities (what was mapped from the statement and posted)"
$BIN/python - "$DEMO_DIR/analytics.duckdb" <<'PY' || true
import sys
import duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
con.sql(
    "select activity_date, activity_type, symbol, quantity::varchar as quantity, "
    "unit_price::varchar as unit_price, amount::varchar as amount, fee::varchar as fee, "
    "currency, external_id from marts.fct_activities order by activity_date, external_id"
).show(max_width=200)
PY
if [ -n "$push_url" ]; then
  echo
  echo "== metrics in the Pushgateway ($push_url/metrics)"
  curl -fsS "$push_url/metrics" | grep -E '^ibkr_' || true
fi
echo
echo "The warehouse is $DEMO_DIR/warehouse.duckdb; analysts' copy: $DEMO_DIR/analytics.duckdb"
echo "Try: $BIN/python -c \"import duckdb; print(duckdb.connect('$DEMO_DIR/analytics.duckdb', read_only=True).sql('select * from marts.fct_activities'))\""
exit "$code"
