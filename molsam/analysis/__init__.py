"""Analyses of trained models (flatness: molsam.analysis.sharpness). They take a model, its data
and its loss, and know nothing of the CLI."""
