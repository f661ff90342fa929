"""Split method names and default sizes: no numpy, so the CLI's help text imports them in
microseconds (molsam.data.splits re-exports them with the split functions)."""

PARTS = ("train", "val", "test")
METHODS = ("scaffold", "scaffold_balanced", "scaffold_random", "random", "column", "file")
DEFAULT_SIZES = (0.8, 0.1, 0.1)
