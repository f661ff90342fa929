"""`python -m molsam`: the same command line as the `molsam` script."""

from molsam.cli.main import app

app()
