"""Entry point of the ``faceatlas`` command: a click group whose sub-commands live in sibling modules.

Sub-command modules are imported lazily so that ``faceatlas --help`` and light commands start
without loading ONNX Runtime, OpenCV or the web stack.
"""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" holding a click.Command
COMMANDS: dict[str, str] = {
    "scan": "faceatlas.cli.scan:scan",
    "models": "faceatlas.cli.models:models",
    "serve": "faceatlas.cli.serve:serve",
    "services": "faceatlas.cli.services:services",
    "index": "faceatlas.cli.library:index",
    "cluster": "faceatlas.cli.library:cluster",
    "people": "faceatlas.cli.library:people",
    "faces": "faceatlas.cli.library:faces",
    "person": "faceatlas.cli.library:person",
    "search": "faceatlas.cli.library:search",
    "export": "faceatlas.cli.library:export",
    "eval": "faceatlas.cli.evaluate:eval_group",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="faceatlas")
def cli() -> None:
    """faceatlas: face recognition service and photo-library face pipeline."""


def main() -> None:
    cli()
