"""molsam.models: the GPS graph transformer (Rampasek et al., NeurIPS 2022)."""

from molsam.models.gps import POOLINGS, GPSModel

__all__ = ["GPSModel", "POOLINGS"]
