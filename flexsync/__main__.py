"""`python -m flexsync` runs the CLI."""

from flexsync.cli import app

app(prog_name="flexsync")
