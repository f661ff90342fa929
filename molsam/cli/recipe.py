"""`molsam recipe schema`: the recipe schema as JSON Schema, for editors' YAML extensions."""

from __future__ import annotations

import json

import typer

recipe_app = typer.Typer(help="Recipe tools.", no_args_is_help=True)


@recipe_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of recipes (validation, completion and hovers in editors, e.g.
    `molsam recipe schema > recipe.schema.json` and `# yaml-language-server: $schema=...`)."""
    from molsam.config import recipe_json_schema

    typer.echo(json.dumps(recipe_json_schema(), indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(recipe_app, name="recipe")
