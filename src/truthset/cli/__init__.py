"""The ``truthset`` command line (Typer + Rich). Thin: parse, call, format."""
