"""``faceatlas serve``: the CompreFace-compatible REST server on uvicorn."""

from __future__ import annotations

import os
from pathlib import Path

import click

from faceatlas.api.settings import MB, Settings
from faceatlas.web.context import WebConfig


@click.command()
@click.option("--host", default=None, help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8000, as CompreFace).")
@click.option("--workers", type=int, default=None, help="Server processes; each loads its own engine.")
@click.option(
    "--database", default=None, metavar="URL", help="SQLAlchemy URL, e.g. postgresql://u:p@host/db."
)
@click.option("--pack", default=None, help="Model pack (default sface).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the SQLite database and the admin token live (default: $FACEATLAS_DATA or ~/.local/share).",
)
@click.option("--keep-images/--no-keep-images", default=None, help="Store uploaded images (default: keep).")
@click.option("--max-file-size", type=float, default=None, metavar="MB", help="Per-image limit (default 5).")
@click.option("--inference-threads", type=int, default=None, help="Concurrent engine calls (default: cores).")
@click.option(
    "--engine-threads",
    type=int,
    default=None,
    help="ONNX Runtime threads per engine call (default 0: all cores for a lone request, 1 under load).",
)
@click.option(
    "--header-timeout", type=float, default=None, help="Seconds for a request's headers (default 10)."
)
@click.option("--body-timeout", type=float, default=None, help="Seconds for a request's body (default 60).")
@click.option(
    "--keep-alive-timeout", type=float, default=None, help="Idle seconds between requests (default 5)."
)
@click.option(
    "--library",
    "libraries",
    multiple=True,
    metavar="PATH|URL",
    help="A photo library the web app shows, besides the one in the data folder (repeatable).",
)
@click.option(
    "--photos-root",
    "photos_roots",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder whose photos the web app may index (repeatable); nothing outside is allowed.",
)
@click.option(
    "--index",
    "index",
    type=click.Choice(["exact", "hnsw", "pgvector", "auto"]),
    default=None,
    help="Face index: exact product, HNSW graph, pgvector in PostgreSQL, or auto (HNSW from 200 000 faces).",
)
@click.option("--log-level", default="info", show_default=True)
def serve(
    host: str | None,
    port: int | None,
    workers: int | None,
    database: str | None,
    pack: str | None,
    data_dir: Path | None,
    keep_images: bool | None,
    max_file_size: float | None,
    inference_threads: int | None,
    engine_threads: int | None,
    header_timeout: float | None,
    body_timeout: float | None,
    keep_alive_timeout: float | None,
    libraries: tuple[str, ...],
    photos_roots: tuple[Path, ...],
    index: str | None,
    log_level: str,
) -> None:
    """Run the REST server (CompreFace API under /api/v1, admin API under /admin, docs at /docs)."""
    from faceatlas.models.packs import get_pack
    from faceatlas.models.store import model_dir, require_installed
    from faceatlas.storage.db import Database, make_private_dir

    settings = Settings.from_env(
        host=host,
        port=port,
        workers=workers,
        database=database,
        pack=pack,
        data_dir=data_dir,
        keep_images=keep_images,
        max_file_size=int(max_file_size * MB) if max_file_size else None,
        inference_threads=inference_threads,
        engine_threads=engine_threads,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        keep_alive_timeout=keep_alive_timeout,
        index=index,
    )
    # refuse an unknown or missing pack here, in one line, before the server starts and loads it
    require_installed(get_pack(settings.pack), model_dir())
    make_private_dir(Path(settings.data_dir))  # the SQLite database, kept images, the admin token
    # migrate once here, so that worker processes never race on the schema
    Database.open(settings.database_url).dispose()
    # the web app of every worker process reads its libraries and photo roots from the environment
    web_config = WebConfig(Path(settings.data_dir), libraries, tuple(p.resolve() for p in photos_roots))
    os.environ.update(web_config.to_env())
    token, token_file = settings.resolve_admin_token()
    db_hint = "" if settings.database is None else " --database URL"
    click.echo(f"faceatlas: CompreFace-compatible API on http://{settings.host}:{settings.port}/api/v1")
    click.echo(
        f"  database: {_safe(settings.database_url)}   model pack: {settings.pack}   index: {settings.index}"
    )
    click.echo(
        f"  web app: http://{settings.host}:{settings.port}/ (log in with the admin token or the password"
    )
    click.echo("    set with `faceatlas web set-password`)")
    click.echo(f"  API docs: http://{settings.host}:{settings.port}/docs")
    click.echo(
        f"  get an API key: faceatlas services create --name NAME --type recognition"
        f" --data-dir {settings.data_dir}{db_hint}"
    )
    if token_file is not None:
        click.echo(f"  admin token for /admin/...: {token_file}")
    else:
        click.echo("  admin token for /admin/...: FACEATLAS_ADMIN_TOKEN")
    del token
    from faceatlas.api.server import run_server

    run_server(settings, log_level=log_level)


def _safe(url: str) -> str:
    """The URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return url
