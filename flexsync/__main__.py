"""`python -m flexsync` runs the CLI."""

from flexsync.cli import entrypoint

entrypoint()
