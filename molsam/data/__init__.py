"""molsam.data."""
