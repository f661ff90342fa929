"""`molsam tune RECIPE [--trials N] [--jobs N] [--timeout S] [--storage URL|FILE] [--out DIR]
[--set KEY=VALUE]`."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from molsam.cli.signals import sigterm_as_interrupt
from molsam.errors import MolsamError

log = logging.getLogger("molsam")


def tune(
    recipe: Path = typer.Argument(..., help="Recipe YAML; its tune: section is the search space."),
    trials: int = typer.Option(20, "--trials", "-n", min=1,
                               help="Trials to run in this call (all --jobs together)."),
    jobs: int = typer.Option(
        1, "--jobs", "-j", min=1,
        help="Trial processes on this machine, one core (torch thread) each, sharing the study.",
    ),
    timeout: float = typer.Option(None, "--timeout", min=1, help="Stop after S seconds."),
    storage: str = typer.Option(
        None, "--storage",
        help="Optuna storage shared by every worker: a database URL (postgresql://host/db, "
             "mysql://...) or a journal file path [default: DIR/study.journal].",
    ),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder [default: runs/tune-NAME]."),
    study_name: str = typer.Option("molsam", "--study-name", help="Study inside the storage."),
    seed: int = typer.Option(
        0, "--seed", help="TPE sampler seed (--jobs workers derive theirs; one per machine)."),
    prune: bool = typer.Option(True, "--prune/--no-prune",
                               help="Pruning per epoch (tune.pruner; default median)."),
    overrides: list[str] = typer.Option(
        None, "--set", help="Override a recipe key, e.g. --set train.epochs=10 (repeatable)."
    ),
) -> None:
    """Search hyper-parameters with Optuna (TPE, pruning) on the validation metric, in --jobs
    processes; a second call with the same --out (or --storage) continues the study."""
    from rich.console import Console

    from molsam.cli.main import fail
    from molsam.config import apply_overrides, load_recipe_dict, recipe_from_dict

    console = Console(stderr=True)
    out = out or Path("runs") / f"tune-{recipe.stem}"
    try:
        from molsam.tune import import_optuna, tune_recipe

        optuna = import_optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # molsam prints one line per trial
        raw = apply_overrides(load_recipe_dict(recipe), overrides or [])
        resolved = recipe_from_dict(raw, source=str(recipe), base_dir=recipe.parent)
        with sigterm_as_interrupt():
            result = tune_recipe(
                resolved, out, trials=trials, timeout=timeout, storage=storage,
                study_name=study_name, seed=seed, prune=prune, jobs=jobs,
                on_epoch=lambda info: log.debug(
                    "trial %d seed %d epoch %d: val %s %s", info["trial"], info["seed"],
                    info["epoch"] + 1, info["metric"], info["val"]),
                on_trial=lambda study, trial: console.print(_trial_line(trial)),
            )
    except KeyboardInterrupt as interrupt:
        result = getattr(interrupt, "tune_result", None)
        if result is not None:
            _report(console, result, out)
        console.print(f"interrupted: the study keeps every finished trial (those in progress "
                      f"are marked failed); continue with the same command")
        raise typer.Exit(code=130) from None
    except MolsamError as error:
        raise fail(error) from None
    _report(console, result, out)


def _trial_line(trial) -> str:
    value = "-" if trial.value is None else f"{trial.value:.4f}"
    params = ", ".join(f"{k}={_show(v)}" for k, v in trial.params.items())
    extra = f" ({trial.user_attrs['error']})" if trial.user_attrs.get("error") else ""
    step = f" at step {trial.last_step}" if trial.state.name == "PRUNED" else ""
    return f"trial {trial.number} {trial.state.name.lower()}{step}: {value}  {params}{extra}"


def _show(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _report(console: Console, result, out: Path) -> None:
    from rich.table import Table

    from molsam.tune import best_trials, load_study

    study = load_study(result.storage, result.study_name)
    best = best_trials(study, 5)
    if best:
        names = list(best[0].params)
        console.print(f"best trials of study {result.study_name!r} "
                      f"({result.direction} val {result.metric}):")
        table = Table()
        for column in ("trial", f"val {result.metric}", *names, "seconds"):
            table.add_column(column, justify="right")
        for t in best:
            seconds = t.duration.total_seconds() if t.duration else 0.0
            table.add_row(str(t.number), f"{t.value:.4f}",
                          *(_show(t.params.get(n, "")) for n in names), f"{seconds:.0f}")
        console.print(table)
    states = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    console.print(f"{result.trials_run} trial(s) run now; study totals: "
                  + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    for note in result.notes:
        console.print(f"note: {note}")
    written = [p.name for p in (result.best_recipe, *result.files.values()) if p is not None]
    console.print(f"outputs in {out}: {', '.join(written)}; storage {result.storage}")
    if result.best_recipe is not None:
        console.print(f"train the best recipe (and score it on test): "
                      f"molsam train {result.best_recipe}")


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)
