"""Loaders: post activities to Wealthfolio, push drift and run metrics to a Pushgateway.

- `wealthfolio_client` — the Wealthfolio activity API (search, check, create, update, delete).
- `wealthfolio_session` — login, the session cache, one call's re-login and retries.
- `wealthfolio_http` — reading Wealthfolio's answers (JSON, Decimal money, transient errors).
- `account_preflight` — the target accounts can take activities, checked before posting.
- `wealthfolio_loader` — `marts.activities_to_post` → `POST /api/v1/activities`, dry-run plan.
- `wealthfolio_payloads` — a mart row → the Wealthfolio NewActivity it becomes.
- `ledger` — `sync.posted_activities`, one row per Wealthfolio answer.
- `pushgateway` — drift and run metrics to the Prometheus Pushgateway.
"""
