"""molsam.train."""
