"""`molsam train RECIPE [--out RUN_DIR] [--set KEY=VALUE ...] [--resume RUN_DIR] [--devices N]`.

On several GPUs: `--devices N` (or `train.devices: N`) launches `torchrun --standalone
--nproc-per-node N -m molsam train ...` with the same arguments; starting torchrun yourself
(`torchrun --nproc-per-node N -m molsam train recipe.yaml`, multi-node too) works as well. Only
rank 0 prints progress and results.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import typer
from molsam.errors import MolsamError

log = logging.getLogger("molsam")


def train(
    recipe: Path = typer.Argument(None, help="Recipe YAML (not needed with --resume)."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory [default: runs/NAME-TIME]."),
    overrides: list[str] = typer.Option(
        None, "--set", help="Override a recipe key, e.g. --set optim.rho=0.01 (repeatable)."
    ),
    resume: Path = typer.Option(None, "--resume", help="Continue the run in this directory."),
    devices: int = typer.Option(
        None, "--devices", min=1,
        help="Processes to train on, one per GPU, launched through torchrun [default: "
             "train.devices]. Ignored when torchrun started this command.",
    ),
) -> None:
    """Featurize, split, train (GraphSAM by default), keep the best epoch, test it."""
    from rich.console import Console

    from molsam.cli.main import fail
    from molsam.cli.progress import progress_callback
    from molsam.cli.signals import sigterm_as_interrupt
    from molsam.config import apply_overrides, load_recipe_dict, recipe_from_dict
    from molsam.train.distributed import Distributed, launch, shutdown, under_torchrun
    from molsam.train.run import resume_run, train_recipe

    main_rank = Distributed.from_environment().is_main if under_torchrun() else True
    # Ranks other than 0 train silently: one progress display and one result, from rank 0.
    console = Console(stderr=True, quiet=not main_rank)
    if not main_rank:
        logging.getLogger("molsam").setLevel(logging.WARNING)
    run_dir: Path | None = resume
    try:
        if resume is not None and overrides:
            raise MolsamError("--set cannot change a run that is resumed (its recipe is fixed)")
        if resume is None and recipe is None:
            raise MolsamError("give a RECIPE file, or --resume RUN_DIR")
        if not under_torchrun():
            argv = _launch_argv(recipe, out, overrides or [], resume, devices)
            if argv is not None:
                raise typer.Exit(code=launch(argv[0], argv[1:]))
        if resume is not None:
            with sigterm_as_interrupt(), progress_callback("featurizing") as featurize_update, \
                    _epoch_reporter(console) as update:
                summary = resume_run(resume, on_progress=update, on_featurize=featurize_update)
        else:
            raw = apply_overrides(load_recipe_dict(recipe), overrides or [])
            resolved = recipe_from_dict(raw, source=str(recipe), base_dir=recipe.parent)
            run_dir = out or Path("runs") / f"{recipe.stem}-{datetime.now():%Y%m%d-%H%M%S}"
            # SIGTERM (kill, a scheduler's time limit) stops like Ctrl-C: the --resume hint.
            with sigterm_as_interrupt(), progress_callback("featurizing") as featurize_update, \
                    _epoch_reporter(console) as update:
                summary = train_recipe(
                    resolved, run_dir, on_progress=update, on_featurize=featurize_update,
                    log_warning=lambda w: console.print(f"[yellow]warning:[/] {w}"),
                    log_info=lambda line: console.print(line, highlight=False, markup=False),
                )
    except KeyboardInterrupt:
        console.print(interrupted_message(run_dir, recipe, out))
        raise typer.Exit(code=130) from None
    except MolsamError as error:
        raise fail(error) from None
    finally:
        shutdown()

    metric = summary["metric"]
    test = summary["test"].get("mean", {}).get(metric) or {}
    if test.get("mean") is not None:
        console.print(
            f"test {metric}: {test['mean']:.4f} +- {test['std']:.4f} over {test['n']} replicate(s); "
            f"{summary['graphs_per_s']['mean']:.0f} training graphs/s on {summary['device']}"
        )
    console.print(f"run directory: {run_dir} (summary.json, curves.png, seed_*/best.pt)")


def interrupted_message(run_dir: Path | None, recipe: Path | None, out: Path | None) -> str:
    """What Ctrl-C leaves: a resume command only when the folder holds a resumable run (its
    recipe.yaml and splits.json, written before the first epoch); before that (featurizing,
    splitting) there is nothing to resume, and the hint repeats the command instead."""
    if run_dir is not None and all((run_dir / f).is_file() for f in ("recipe.yaml", "splits.json")):
        return ("interrupted: every replicate's last.pt holds its last finished epoch; "
                f"continue with `molsam train --resume {run_dir}`")
    again = f"molsam train {recipe or 'RECIPE'}" + (f" --out {out}" if out else "")
    return f"interrupted before training started (nothing to resume); start again with `{again}`"


def _launch_argv(recipe: Path | None, out: Path | None, overrides: list[str],
                 resume: Path | None, devices: int | None) -> list | None:
    """[N, *arguments of `molsam` for each of N processes] when training should launch N > 1
    processes (--devices, else the recipe's train.devices), else None. The run directory is
    fixed here, so every process writes to (and reads from) the same one."""
    from molsam.config import apply_overrides, load_recipe, load_recipe_dict, recipe_from_dict

    if devices is None:
        if resume is not None:
            if not (resume / "recipe.yaml").is_file():
                return None  # resume_run reports the missing recipe in one line
            devices = load_recipe(resume / "recipe.yaml").train.devices
        else:
            raw = apply_overrides(load_recipe_dict(recipe), overrides)
            devices = recipe_from_dict(raw, source=str(recipe), base_dir=recipe.parent).train.devices
    if devices <= 1:
        return None
    if resume is not None:
        return [devices, "train", "--resume", str(resume)]
    run_dir = out or Path("runs") / f"{recipe.stem}-{datetime.now():%Y%m%d-%H%M%S}"
    argv = [devices, "train", str(recipe), "--out", str(run_dir)]
    for override in overrides:
        argv += ["--set", override]
    return argv


@contextmanager
def _epoch_reporter(console: Console):
    """A live bar with loss and validation metric on a terminal; one plain line per epoch else."""
    if not console.is_terminal:
        def plain(info: dict) -> None:
            if info.get("done_epoch"):
                log.info(_epoch_line(info))

        yield plain
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), console=console,
    ) as bar:
        tasks: dict[int, int] = {}

        def live(info: dict) -> None:
            seed = info["seed"]
            if seed not in tasks:
                tasks[seed] = bar.add_task(f"seed {seed}", total=None, status="")
            if info.get("done_epoch"):
                bar.update(tasks[seed], completed=info["epoch"] + 1, total=info["epochs"],
                           status=_epoch_line(info))
            else:
                bar.update(tasks[seed], status=f"epoch {info['epoch']} step {info['step']}/"
                           f"{info['steps']} loss {info['loss']:.4f}")

        yield live


def _epoch_line(info: dict) -> str:
    """Loss and validation per epoch; the test metric is shown only once training has chosen
    its epoch (the summary line), so nobody picks an epoch or a setting on test."""
    def show(value):
        return "-" if value is None else f"{value:.4f}"

    return (
        f"seed {info['seed']} epoch {info['epoch'] + 1}/{info['epochs']}: loss {info['loss']:.4f} "
        f"val {info['metric']} {show(info['val'])} "
        f"{info['graphs_per_s']:.0f} graphs/s{' *best' if info['best'] else ''}"
    )


def register(app: typer.Typer) -> None:
    app.command("train")(train)
