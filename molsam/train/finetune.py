"""Fine-tuning: start a model from another trained model's encoder (`train.init_from`).

The encoder is every parameter but the head's (and the molecule-feature scaler's, which is fitted
on this run's own training split): embeddings, message passing and attention layers, the
readout. The head comes along only when the checkpoint was trained on the same targets and task
(then training simply continues); otherwise it starts fresh, as for a new task.

`train.freeze`: "encoder" trains the head alone (a linear probe when the head is one layer),
"embeddings" keeps only the input embeddings fixed, "none" trains everything;
`optim.encoder_lr_scale` multiplies the learning rate of the encoder's parameters (the usual
discriminative learning rate of transfer learning, Howard & Ruder, ACL 2018).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from molsam.errors import CheckpointError, ConfigError
from molsam.train.checkpoint import checkpoint_loss, load_checkpoint

#: The checkpoint a run directory's replicate is used by (as molsam predict uses it).
CHECKPOINT_NAME = "best.pt"

#: Parameter-name prefixes that are not part of the encoder.
NOT_ENCODER = ("head.", "feature_scaler.")
#: Input embeddings of both models (GPS: codes, RWSE; CoMPT: atom, bond, position).
EMBEDDINGS = ("atom_embedding.", "bond_embedding.", "pe_projection.", "position.")


def is_encoder(name: str) -> bool:
    return not name.startswith(NOT_ENCODER)


def checkpoint_for_seed(path: str | Path, seed: int) -> Path:
    """A checkpoint file as is; a run directory gives the replicate trained with the same seed,
    else its first replicate (so each fine-tuned replicate starts from a matching model when
    the pre-training run has as many seeds)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return path
    same = path / f"seed_{seed}" / CHECKPOINT_NAME
    if same.is_file():
        return same
    replicas = sorted(path.glob(f"seed_*/{CHECKPOINT_NAME}"))
    if not replicas:
        raise ConfigError(f"train.init_from: {path} holds no seed_*/{CHECKPOINT_NAME}")
    return replicas[0]


def load_encoder(model: nn.Module, path: Path, featurizer: dict, target_names: list[str],
                 task: str, loss: str = "mse") -> bool:
    """Copy the encoder (and the head when the targets, task and loss match: an mve head has
    twice the outputs) of checkpoint `path`
    into `model`. `featurizer` is the spec this run featurizes with: a checkpoint made from
    other inputs is refused. Returns whether the head was copied too.

    Raises ConfigError (one line) for a featurizer or architecture that does not fit.
    """
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise ConfigError(f"train.init_from: {exc}") from None
    theirs = ckpt.get("featurizer")
    if theirs != featurizer:
        differing = sorted(k for k in set(theirs or {}) | set(featurizer)
                           if (theirs or {}).get(k) != featurizer.get(k))
        raise ConfigError(
            f"train.init_from: {path} was featurized differently ({', '.join(differing)}: "
            f"{[(theirs or {}).get(k) for k in differing]} vs this recipe's "
            f"{[featurizer.get(k) for k in differing]}); use the same model.name, pe_steps and "
            "mol_features")
    same_head = (ckpt.get("target_names") == list(target_names) and ckpt.get("task") == task
                 and checkpoint_loss(ckpt) == loss)
    state = ckpt["model_state"]
    own = model.state_dict()
    copied = {}
    for name, value in own.items():
        if not is_encoder(name) and not (same_head and name.startswith("head.")):
            continue
        if name not in state or state[name].shape != value.shape:
            got = "missing" if name not in state else tuple(state[name].shape)
            raise ConfigError(
                f"train.init_from: {path} does not fit this model: {name} is {got} there, "
                f"{tuple(value.shape)} here (use the same model architecture)")
        copied[name] = state[name]
    model.load_state_dict(copied, strict=False)
    return same_head


def freeze(model: nn.Module, mode: str) -> int:
    """Stop gradients for the encoder ("encoder") or its input embeddings ("embeddings");
    returns how many parameter tensors were frozen."""
    if mode == "none":
        return 0
    frozen = 0
    for name, parameter in model.named_parameters():
        if (mode == "encoder" and is_encoder(name)) or (
                mode == "embeddings" and name.startswith(EMBEDDINGS)):
            parameter.requires_grad_(False)
            frozen += 1
    return frozen


def trainable_groups(model: nn.Module, groups: list[dict], encoder_lr_scale: float) -> list[dict]:
    """Param groups (lists of (name, parameter)) without frozen parameters; with a scale other
    than 1, each group split into its encoder part (`lr_scale` = the scale) and the rest."""
    out = []
    for group in groups:
        named = [(n, p) for n, p in group["params"] if p.requires_grad]
        options = {k: v for k, v in group.items() if k != "params"}
        if encoder_lr_scale == 1.0:
            parts = [(named, 1.0)]
        else:
            parts = [([(n, p) for n, p in named if is_encoder(n)], encoder_lr_scale),
                     ([(n, p) for n, p in named if not is_encoder(n)], 1.0)]
        out += [{"params": part, **options, **({"lr_scale": scale} if scale != 1.0 else {})}
                for part, scale in parts if part]
    return out
