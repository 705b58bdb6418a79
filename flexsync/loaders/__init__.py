"""Loaders: post activities to Wealthfolio, push drift and run metrics to a Pushgateway.

- `wealthfolio_client` — the Wealthfolio HTTP client (login, session cache, retries).
- `wealthfolio_loader` — `marts.activities_to_post` → `POST /api/v1/activities`, dry-run plan.
- `ledger` — `sync.posted_activities`, one row per Wealthfolio answer.
- `pushgateway` — drift and run metrics to the Prometheus Pushgateway.
"""
