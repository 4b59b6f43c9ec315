"""What every ``jobplane`` command shares: settings, running in the app as the CLI's actor, and
printing tables for people and JSON for scripts."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Callable, Iterator, Sequence
from uuid import UUID

import click

from app.config import ConfigError, load_settings

#: ``--json`` on every command that lists or shows something.
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON (for scripts) instead of a table")


def settings() -> dict:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def app_context() -> Iterator[Any]:
    """A configured app's context, with Jobplane's errors turned into a CLI error naming the fix
    (exit 1). Nothing is committed: see ``in_app``."""
    from app import create_app
    from app.errors import InvalidInput, JobplaneError

    settings()
    app = create_app()
    with app.app_context():
        try:
            yield app
        except InvalidInput as exc:
            raise click.ClickException(problems(exc)) from None
        except JobplaneError as exc:
            raise click.ClickException(exc.message) from None


def problems(exc) -> str:
    return "; ".join(f"{field}: {', '.join(messages)}" for field, messages in exc.errors.items())


def in_app(work: Callable[[Any], Any]) -> Any:
    """Run ``work(actor)`` in one committed transaction of a configured app, as the CLI's actor
    (audited as ``cli:<login>``); Jobplane's errors become a CLI error naming the fix, and roll
    everything back."""
    from app.extensions import db
    from app.services.actors import cli_actor

    with app_context():
        with db.unit_of_work():
            return work(cli_actor())


def uuid_argument(what: str, hint: str) -> Callable[[click.Context, click.Parameter, str | None], UUID | None]:
    """A click callback parsing an id, or saying how to find one."""

    def parse(_ctx: click.Context, param: click.Parameter, value: str | None) -> UUID | None:
        if value is None:
            return None
        try:
            return UUID(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not {what} id (a UUID); {hint}", param=param) from None

    return parse


def plain(value: Any) -> Any:
    """A value as JSON holds it."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


def emit(rows: Sequence[dict[str, Any]] | dict[str, Any], *, as_json: bool, columns: Sequence[str] = ()) -> None:
    """Print rows as JSON, or as a table of ``columns`` (a single dict as ``key: value`` lines)."""
    if as_json:
        click.echo(json.dumps(rows, default=plain, indent=2, ensure_ascii=False))
        return
    if isinstance(rows, dict):
        width = max((len(key) for key in rows), default=0)
        for key, value in rows.items():
            click.echo(f"{key:<{width}}  {_cell(value)}")
        return
    if not rows:
        click.echo("(none)")
        return
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    click.echo("  ".join(column.upper().ljust(width) for column, width in zip(columns, widths)).rstrip())
    for line in cells:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
