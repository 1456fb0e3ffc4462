"""``faceatlas web set-password``: the password of the web app's login (the admin token works too)."""

from __future__ import annotations

from pathlib import Path

import click

from faceatlas.storage.db import default_data_dir


@click.group()
def web() -> None:
    """The web app at http://HOST:PORT/ (photo library, later the service console)."""


@web.command("set-password")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The server's data folder (default: $FACEATLAS_DATA or ~/.local/share/faceatlas).",
)
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    envvar="FACEATLAS_WEB_PASSWORD",
    help="The new password (asked for when not given).",
)
def set_password(data_dir: Path | None, password: str) -> None:
    """Set the web login's password; only a salted scrypt hash is stored, in the data folder."""
    from faceatlas.web.auth import PasswordError
    from faceatlas.web.auth import set_password as store

    try:
        path = store(data_dir or default_data_dir(), password)
    except PasswordError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"password set; its hash is in {path}")
