"""The README stays true: every setting and every command is documented."""

from __future__ import annotations

from pathlib import Path

import typer

from keyart.cli import app
from keyart.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [
        f"KEYART_{name.upper()}"
        for name in Settings.model_fields
        if f"KEYART_{name.upper()}" not in README
    ]
    assert not missing, f"settings missing from README.md: {missing}"


def test_every_command_is_in_the_readme() -> None:
    group = typer.main.get_command(app)
    missing = [name for name in group.commands if f"keyart {name}" not in README]  # type: ignore[attr-defined]
    assert not missing, f"commands missing from README.md: {missing}"


def test_the_two_setup_commands_are_there() -> None:
    assert "make demo" in README and "make test" in README
