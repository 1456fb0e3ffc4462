"""Helpers every sub-command shares: loading the engine, and the error type the entry point prints."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from faceatlas.engine import Engine


class CommandError(click.ClickException):
    """A refusal printed as one ``Error: ...`` line with exit code 2, never a traceback."""

    exit_code = 2


def load_engine(
    pack: str,
    *,
    threads: int | None = None,
    attributes: bool = True,
    detector: str | None = None,
    det_size: int = 640,
) -> Engine:
    """The engine for a command (imported here so light commands never load ONNX Runtime)."""
    from faceatlas.engine import Engine

    return Engine(pack, threads=threads, attributes=attributes, detector=detector, det_size=det_size)
