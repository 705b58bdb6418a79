"""flexsync: IBKR Flex -> DuckDB -> dbt -> Wealthfolio + Pushgateway."""

__version__ = "0.1.0"
