"""molsam.cli."""
