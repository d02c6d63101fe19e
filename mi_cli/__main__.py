"""Allows `python -m mi_cli`."""

from mi_cli.cli.main import run

run()
