"""Allows `python -m mi_cli`."""

from mi_cli.cli.thin import run

run()
