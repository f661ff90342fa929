"""molsam.models."""
