"""`python -m molsam`: the same command line as the `molsam` script."""

from molsam.cli.main import app

# Guarded: `molsam tune --jobs N` starts its workers with multiprocessing's "spawn", which
# imports the parent's main module in each worker (as __mp_main__); the app must not run there.
if __name__ == "__main__":
    app()
