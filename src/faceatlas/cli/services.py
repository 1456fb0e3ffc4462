"""``faceatlas services``: create, list, rotate keys of and delete face services (API keys)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from faceatlas.api.settings import Settings
from faceatlas.errors import ServiceExistsError, ServiceNotFoundError
from faceatlas.storage.service_tables import SERVICE_TYPES
from faceatlas.storage.services import ServiceStore


def _store(database: str | None, data_dir: Path | None) -> ServiceStore:
    from faceatlas.storage.db import Database

    settings = Settings.from_env(database=database, data_dir=data_dir)
    return ServiceStore(Database.open(settings.database_url))


def _db_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="The server's data directory (default: $FACEATLAS_DATA or ~/.local/share/faceatlas).",
    )(f)
    return click.option("--database", default=None, metavar="URL", help="SQLAlchemy URL (default: SQLite).")(
        f
    )


@click.group()
def services() -> None:
    """Face services: each has a type and an API key (the x-api-key header)."""


@services.command("create")
@click.option("--name", required=True)
@click.option(
    "--type",
    "type_",
    type=click.Choice([*SERVICE_TYPES, "verify"], case_sensitive=False),
    default="recognition",
    show_default=True,
)
@click.option("--pack", default=None, help="Model pack recorded with the service (default: the server's).")
@click.option("--json", "as_json", is_flag=True, help="Print the service as JSON.")
@_db_options
def create(
    name: str, type_: str, pack: str | None, as_json: bool, database: str | None, data_dir: Path | None
) -> None:
    """Create a service and print its API key."""
    type_ = "verification" if type_.lower() == "verify" else type_.lower()
    store = _store(database, data_dir)
    try:
        record = store.create_service(name, type_, pack or Settings.from_env().pack)
    except (ServiceExistsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(record.to_dict()))
    else:
        click.echo(f"created {record.type} service {record.name!r}; API key (x-api-key, shown only now):")
        click.echo(record.api_key)


@services.command("list")
@click.option("--json", "as_json", is_flag=True)
@_db_options
def list_(as_json: bool, database: str | None, data_dir: Path | None) -> None:
    """List services (a key is shown in full only by create and rotate-key; here its last characters)."""
    records = _store(database, data_dir).list_services()
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in records]))
        return
    for r in records:
        click.echo(f"{r.id:>4}  {r.name:<24} {r.type:<13} ...{r.key_hint}  {r.pack}")


@services.command("rotate-key")
@click.argument("service")
@_db_options
def rotate_key(service: str, database: str | None, data_dir: Path | None) -> None:
    """Give SERVICE (name or id) a new API key and print it (only now); the old key stops working."""
    try:
        record = _store(database, data_dir).rotate_key(service)
    except ServiceNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(record.api_key)


@services.command("delete")
@click.argument("service")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_db_options
def delete(service: str, yes: bool, database: str | None, data_dir: Path | None) -> None:
    """Delete SERVICE (name or id) with its whole face collection."""
    store = _store(database, data_dir)
    if not yes:
        click.confirm(f"Delete service {service!r} and all its faces?", abort=True)
    try:
        record = store.delete_service(service)
    except ServiceNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"deleted service {record.name!r}")


@services.command("import-library")
@click.option(
    "--library", "library_location", required=True, help="Library folder, .db file or database URL."
)
@click.option("--service", "service", required=True, help="Recognition service (name or id) to publish into.")
@click.option("--person", "people", multiple=True, help="Only this person (name or id); repeatable.")
@click.option(
    "--faces-per-person",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Best faces stored per person (largest, sharpest, most frontal, most different).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_db_options
def import_library(
    library_location: str,
    service: str,
    people: tuple[str, ...],
    faces_per_person: int,
    as_json: bool,
    database: str | None,
    data_dir: Path | None,
) -> None:
    """Publish a library's named people as subjects of SERVICE; re-running applies only what changed."""
    from faceatlas.errors import FaceAtlasError
    from faceatlas.library.publish import publish_library
    from faceatlas.library.store import open_library

    store = _store(database, data_dir)
    try:
        report = publish_library(
            open_library(library_location),
            store,
            service,
            people=list(people) or None,
            faces_per_person=faces_per_person,
        )
    except (FaceAtlasError, ServiceNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "changed": report.changed}))
        return
    for person in report.people:
        if person.skipped:
            click.echo(f"{person.name}: skipped ({person.skipped})")
            continue
        renamed = f", renamed from {person.renamed_from!r}" if person.renamed_from else ""
        click.echo(f"{person.name}: +{person.added} -{person.removed} faces{renamed}")
    for name in report.deleted_subjects:
        click.echo(f"{name}: subject deleted (no longer a named person of the library)")
    if not report.changed:
        click.echo("nothing changed")
