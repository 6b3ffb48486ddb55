"""Input parsing, loading and output for ``keyart report`` and ``keyart evaluate``.

Not public API: :mod:`bandits.cli` is the only user.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

__all__ = [
    "dumps",
    "fail",
    "load",
    "parse_mapping",
    "parse_time",
    "print_table",
    "split_shares",
    "write_csv",
]

if TYPE_CHECKING:
    import pandas as pd

    from bandits.evaluation.logs import EventLogs


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(message, fg="red", err=True)
    return typer.Exit(code)


def parse_time(value: str | None, option: str) -> int | None:
    """Milliseconds since the epoch from an ISO 8601 time or a number of ms."""
    if value is None:
        return None
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise fail(
            f"{option}: expected ISO 8601 time or epoch ms, got {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_mapping(value: str | None, option: str) -> dict[str, float] | None:
    """``name=number,name=number`` into a dict."""
    if not value:
        return None
    out: dict[str, float] = {}
    for part in value.split(","):
        name, _, number = part.partition("=")
        try:
            out[name.strip()] = float(number)
        except ValueError:
            raise fail(f"{option}: expected name=number[,...], got {part!r}") from None
    return out


def load(source: str, obd: str, since: str | None, until: str | None) -> EventLogs:
    """Impressions (with clicked) and decisions of the chosen source."""
    from bandits.evaluation.logs import (
        EventLogs,
        load_kafka_logs,
        load_obd,
        time_filter,
    )

    since_ms = parse_time(since, "--since")
    until_ms = parse_time(until, "--until")
    if source == "obd":
        from keyart.cli import settings_for_cli
        from keyart.data import FetchError, fetch

        if obd not in ("random", "bts", "both"):
            raise fail(f"--obd: expected random, bts or both, got {obd!r}")
        import pandas as pd

        names = ["random", "bts"] if obd == "both" else [obd]
        try:
            paths = [
                fetch(f"obd_{n}_all.csv", settings_for_cli().data_cache) for n in names
            ]
        except FetchError as error:
            raise fail(f"--source obd: {error}", 1) from None
        impressions = pd.concat(
            [load_obd(p, n) for p, n in zip(paths, names, strict=True)],
            ignore_index=True,
        )
        impressions = time_filter(impressions, since_ms, until_ms)
        return EventLogs(pd.DataFrame(), impressions, pd.DataFrame(), {}, f"obd-{obd}")
    if source != "kafka":
        raise fail(f"--source: expected kafka or obd, got {source!r}")
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from bandits.evaluation.logs import LogReadError
    from keyart.cli import settings_for_cli

    settings = settings_for_cli()
    with Progress(
        SpinnerColumn(),
        TextColumn("reading {task.completed} events from Kafka"),
        transient=True,
        console=_stderr_console(),
    ) as progress:
        task = progress.add_task("read", total=None)
        try:
            logs = load_kafka_logs(
                settings,
                since_ms,
                until_ms,
                on_progress=lambda n: progress.advance(task, n),
            )
        except LogReadError as error:
            raise fail(str(error), 1) from None
    for kind, bad in logs.undecodable.items():
        if bad:
            typer.secho(
                f"{bad} undecodable {kind} records left out", fg="yellow", err=True
            )
    return logs


def split_shares(value: str | None) -> dict[str, float] | None:
    """Variant shares from ``--split``: explicit, ``stored`` in Redis, or none."""
    if value != "stored":
        return parse_mapping(value, "--split")
    from bandits.evaluation.logs import LogReadError, configured_split
    from keyart.cli import settings_for_cli

    try:
        shares = configured_split(settings_for_cli())
    except LogReadError as error:
        raise fail(f"--split stored: {error}", 1) from None
    if shares is None:
        # Nothing stored: the gateway serves its built-in split.
        from gateway.config import ExperimentsDocument

        shares = {
            v.name: v.weight for v in ExperimentsDocument.model_validate({}).variants
        }
    return shares


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def print_table(frame: pd.DataFrame, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in frame.columns:
        table.add_column(
            str(column), justify="left" if frame[column].dtype == object else "right"
        )
    for row in frame.itertuples(index=False):
        table.add_row(*(_cell(v) for v in row))
    Console(width=max(120, 12 * len(frame.columns))).print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return str(value)


def write_csv(frame: pd.DataFrame, target: Path) -> None:
    if str(target) == "-":
        frame.to_csv(sys.stdout, index=False)
    else:
        frame.to_csv(target, index=False)
        typer.echo(f"wrote {target}", err=True)


def json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def clean(obj: Any) -> Any:
    """Replace NaN and infinities by null so that the JSON is standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clean(v) for v in obj]
    if hasattr(obj, "item"):
        return clean(obj.item())
    return obj


def dumps(payload: dict[str, Any]) -> str:
    """JSON text with NaN and infinities as null."""
    return json.dumps(clean(payload), default=json_default)
