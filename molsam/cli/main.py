"""The `molsam` command: a Typer app whose commands live in one small module each.

The error boundary is here: a MolsamError (bad input, bad recipe, bad checkpoint) becomes one line
on stderr and exit code 2; so does, as a last resort, an operating-system error on a path that a
command let through (no space, permission, read-only file system, missing folder: see
molsam.outputs.environment_error); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import logging
import sys

import typer

from molsam import __version__
from molsam.errors import MolsamError

app = typer.Typer(
    name="molsam",
    help="Molecular property prediction with graph transformers trained by GraphSAM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: typer's rich help formatter imports rich and markdown-it (~0.2 s of the
    # start-up budget); every command imports its heavy modules only when it runs.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"molsam {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )


def fail(error: MolsamError) -> typer.Exit:
    """Print one line for a user error and return the exit to raise."""
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(code=2)


from molsam.cli import datasets as _datasets  # noqa: E402  (commands register themselves)
from molsam.cli import evaluate as _evaluate  # noqa: E402
from molsam.cli import featurize as _featurize  # noqa: E402
from molsam.cli import train as _train  # noqa: E402
from molsam.cli import predict as _predict  # noqa: E402
from molsam.cli import benchmark as _benchmark  # noqa: E402
from molsam.cli import tune as _tune  # noqa: E402
from molsam.cli import sharpness as _sharpness  # noqa: E402
from molsam.cli import recipe as _recipe  # noqa: E402
from molsam.cli import calibrate as _calibrate  # noqa: E402
from molsam.cli import embed as _embed  # noqa: E402
from molsam.cli import report as _report  # noqa: E402

for _command in (_featurize, _train, _datasets, _evaluate, _predict, _benchmark, _tune,
                 _sharpness, _recipe, _calibrate, _embed, _report):
    _command.register(app)


def _environment_boundary(command):
    """`command`, with an OSError of the machine (or torch.save's RuntimeError over one) that it
    let through turned into one line naming the path and what to do (exit 2), instead of a
    traceback. Writers name their paths (molsam.outputs.naming); the traceback of such an error
    is still logged with --verbose."""

    @functools.wraps(command)
    def guarded(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (OSError, RuntimeError) as exc:
            from molsam.outputs import environment_error

            error = environment_error(exc)
            if error is None:
                raise
            logging.getLogger("molsam").debug("traceback of the error below", exc_info=True)
            raise fail(error) from None

    return guarded


for _info in app.registered_commands:
    _info.callback = _environment_boundary(_info.callback)
