"""Fakes of the services flexsync talks to, over real loopback HTTP: Wealthfolio
(`fakes.wealthfolio`) and the IBKR Flex Web Service (`fakes.flex`).

The demo (scripts/demo.sh), the benchmarks and the tests start them. They are not part
of the product: pyproject installs only `flexsync`, so the image never ships them.
"""
