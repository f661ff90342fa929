"""tune.pruner: the pruners molsam builds, replayed on fixed learning curves (no training): none
stops a trial during its warm-up, the best trial always runs to the end, and successive halving
trains fewer epochs than median pruning, which trains fewer than none."""

from __future__ import annotations

import math

import pytest

optuna = pytest.importorskip("optuna")  # the `tune` extra; `make test` installs it

from optuna.trial import TrialState  # noqa: E402

from molsam.config import PrunerConfig, recipe_from_dict  # noqa: E402
from molsam.tune import build_pruner, pruner_config  # noqa: E402

EPOCHS = 30
#: Final validation scores of 12 trials in the order they run (the best, 1.0, comes last).
FINALS = [0.5, 0.8, 0.6, 0.9, 0.55, 0.95, 0.7, 0.65, 0.85, 0.6, 0.75, 1.0]


def _replay(pruner) -> optuna.Study:
    """Each trial reports final * (1 - exp(-(epoch + 1) / 5)) per epoch until pruned."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for final in FINALS:
        trial = study.ask()
        value = None
        for epoch in range(EPOCHS):
            value = final * (1 - math.exp(-(epoch + 1) / 5))
            trial.report(value, epoch)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, value)
    return study


def _epochs(study) -> int:
    return sum(t.last_step + 1 for t in study.trials)


@pytest.mark.parametrize("config", [
    PrunerConfig(),
    PrunerConfig(name="median", startup_trials=2, warmup_epochs=3),
    PrunerConfig(name="successive_halving"),
    PrunerConfig(name="successive_halving", reduction_factor=2, warmup_epochs=2),
])
def test_pruners_keep_the_warm_up_and_the_best_trial(config):
    study = _replay(build_pruner(config))
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned  # they do prune ...
    assert min(t.last_step for t in pruned) >= config.warmup_epochs  # ... never in the warm-up
    assert study.trials[-1].state == TrialState.COMPLETE  # the best trial runs to the end
    if config.name == "median":  # its start-up trials all run to the end
        assert all(t.state == TrialState.COMPLETE for t in study.trials[:config.startup_trials])


def test_successive_halving_trains_less_than_median_which_trains_less_than_none():
    none = _epochs(_replay(build_pruner(PrunerConfig(name="none"))))
    median = _epochs(_replay(build_pruner(PrunerConfig())))
    halving = _epochs(_replay(build_pruner(PrunerConfig(name="successive_halving"))))
    assert none == len(FINALS) * EPOCHS
    assert halving < median < none
    assert _epochs(_replay(build_pruner(PrunerConfig(), prune=False))) == none  # --no-prune


def test_the_recipe_chooses_the_pruner():
    base = {"data": {"path": "x.csv"}}
    assert pruner_config(recipe_from_dict(base)) == PrunerConfig()
    recipe = recipe_from_dict({**base, "tune": {"pruner": {"name": "successive_halving"}}})
    assert isinstance(build_pruner(pruner_config(recipe)), optuna.pruners.SuccessiveHalvingPruner)
