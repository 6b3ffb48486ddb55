"""`keyart --help`: the list of commands reads one line a command."""

from __future__ import annotations

import re

import typer
from typer.testing import CliRunner

from keyart.cli import app


def test_each_command_of_the_list_is_one_line() -> None:
    # Wide enough for every summary: a continuation line can then only come
    # from a line break inside a summary, which the list keeps.
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    names = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    panel = result.output.split("Commands")[1]
    rows = [line.strip("│ ") for line in panel.splitlines() if line.startswith("│")]
    listed = [re.split(r"\s{2,}", row, maxsplit=1)[0] for row in rows]
    assert listed == [name for name in listed if name in names]
    assert sorted(listed) == sorted(names)
