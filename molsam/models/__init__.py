"""molsam.models: the GPS graph transformer (Rampasek et al., NeurIPS 2022), molsam's default,
and CoMPT (Chen et al., IJCAI 2021), the GraphSAM paper's backbone. Both take a GraphBatch."""

from __future__ import annotations

from torch import nn

from molsam.models.compt import CoMPTModel
from molsam.models.gps import POOLINGS, GPSModel

#: `model.name` in recipes and the "name" in a model's config (GPS configs carry none).
MODEL_NAMES = ("gps", "compt")


def build_model(config: dict) -> nn.Module:
    """The model a `model.config()` describes (a checkpoint's "model_config")."""
    config = dict(config)
    name = config.pop("name", "gps")
    if name == "compt":
        return CoMPTModel(**config)
    if name != "gps":
        raise ValueError(f"model name {name!r} is not one of {', '.join(MODEL_NAMES)}")
    return GPSModel(**config)


def featurizer_options(model: nn.Module) -> tuple[int, tuple[str, ...]]:
    """(RWSE steps, featurizer extras) a model's inputs need."""
    return int(model.pe_steps), tuple(getattr(model, "featurizer_extras", ()))


__all__ = ["CoMPTModel", "GPSModel", "MODEL_NAMES", "POOLINGS", "build_model",
           "featurizer_options"]
