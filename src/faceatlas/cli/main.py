"""Entry point of the ``faceatlas`` command: a click group whose sub-commands live in sibling modules.

Sub-command modules are imported lazily so that ``faceatlas --help`` and light commands start
without loading ONNX Runtime, OpenCV or the web stack.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import click

from faceatlas.cli.common import CommandError
from faceatlas.errors import FaceAtlasError

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
    "web": "faceatlas.cli.web:web",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        """The one place where a refusal of the core (any FaceAtlasError) becomes a clean message."""
        try:
            return super().invoke(ctx)
        except FaceAtlasError as error:
            raise CommandError(str(error)) from error


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="faceatlas")
def cli() -> None:
    """faceatlas: face recognition service and photo-library face pipeline."""
    # everything faceatlas writes (databases, kept images, thumbnails, caches) shows faces: private
    os.umask(0o077)


def main() -> None:
    cli()
