"""Typed errors. The CLI turns every MolsamError into one line on stderr and exit code 2.

Messages name the file, row, column or key at fault, the value, and the valid choices.
"""

from __future__ import annotations


class MolsamError(Exception):
    """Base class of every error that is the user's input, not a bug."""


class InputError(MolsamError):
    """A data file is missing, empty, malformed, or lacks a column (names file, row, column)."""


class ConfigError(MolsamError):
    """A recipe key is unknown, of the wrong type or out of range (names the dotted key)."""


class CheckpointError(MolsamError):
    """A checkpoint is corrupt, foreign, or of an incompatible format version."""


class DatasetError(MolsamError):
    """A named dataset is unknown or cannot be fetched."""


class OutputError(InputError):
    """A path cannot be written or read for a reason of the machine, not of the data: no space
    left, no permission, a read-only file system, a missing folder. Names the path and what to
    do (molsam.outputs.path_error). An InputError, so callers that catch those still do."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command stops as on Ctrl-C (molsam.cli.signals). A subclass
    of KeyboardInterrupt, so every Ctrl-C clean-up runs; `molsam tune --jobs` tells it apart
    because its workers, unlike on Ctrl-C, were not signalled themselves."""
