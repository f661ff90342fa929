"""molsam: molecular property prediction with graph transformers trained by GraphSAM.

The CLI (`molsam featurize | train | evaluate | predict`) is a thin layer over this package:
everything it does is a call a notebook user can make too.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
