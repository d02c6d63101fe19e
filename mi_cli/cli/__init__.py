"""The `mi` command line: thin Typer adapters over the services."""
