"""Extract: land IBKR Flex statements and Wealthfolio snapshots raw in DuckDB."""
