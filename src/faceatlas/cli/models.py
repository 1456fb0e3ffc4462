"""``faceatlas models``: list, pull and verify model packs."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from faceatlas.models.packs import PACKS, get_pack
from faceatlas.models.store import is_installed, model_dir, pull, verify_pack

console = Console()


@click.group()
def models() -> None:
    """Model packs: list, pull (download) and verify."""


@models.command("list")
@click.option("--model-dir", "root", type=click.Path(file_okay=False, path_type=Path), default=None)
def list_packs(root: Path | None) -> None:
    """Known packs and whether they are installed."""
    base = model_dir(root)
    table = Table()
    for column in ("pack", "installed", "embedding", "threshold", "c0", "c1"):
        table.add_column(column, no_wrap=True)
    table.add_column("description", ratio=1)
    for spec in PACKS.values():
        cal = spec.calibration()
        table.add_row(
            spec.name,
            "bundled" if spec.origin == "bundled" else ("yes" if is_installed(spec, base) else "no"),
            str(spec.embedding_size),
            f"{cal.threshold:.3f}",
            f"{cal.c0:.4f}",
            f"{cal.c1:.4f}",
            spec.description,
        )
    console.print(table)
    console.print(f"model directory: {base}")


@models.command("pull")
@click.argument("name")
@click.option("--model-dir", "root", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--url", default=None, help="Download from this URL instead of the official release.")
@click.option("--sha256", default=None, help="Expected sha256 of the archive (required with --url).")
@click.option("--force", is_flag=True, help="Replace an installed pack.")
def pull_pack(name: str, root: Path | None, url: str | None, sha256: str | None, force: bool) -> None:
    """Download pack NAME, check its size and sha256, and install it atomically."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    spec = get_pack(name)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"pulling {name}", total=None)

        def report(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        path = pull(spec, model_dir(root), url=url, sha256=sha256, force=force, progress=report)
    console.print(f"installed {name} in {path}")


@models.command("verify")
@click.argument("names", nargs=-1)
@click.option("--model-dir", "root", type=click.Path(file_okay=False, path_type=Path), default=None)
def verify(names: tuple[str, ...], root: Path | None) -> None:
    """Check installed packs' files against their reference sizes and sha256 (all packs if none named)."""
    base = model_dir(root)
    bad = False
    table = Table("pack", "file", "status")
    for name in names or tuple(PACKS):
        spec = get_pack(name)
        if not names and spec.origin == "download" and not is_installed(spec, base):
            continue
        for check in verify_pack(spec, base):
            table.add_row(name, check.filename, check.status)
            bad |= check.status in ("missing", "size mismatch", "hash mismatch")
    console.print(table)
    if bad:
        raise SystemExit(1)
