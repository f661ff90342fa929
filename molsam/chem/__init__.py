"""molsam.chem."""
