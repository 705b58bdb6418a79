"""Loaders: post activities to Wealthfolio, push drift and run metrics to a Pushgateway."""
