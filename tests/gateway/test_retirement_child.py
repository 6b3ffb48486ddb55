"""The retirement rule's child process, seen from outside the gateway.

Each test runs a small program of the gateway's (:data:`PROGRAM`) in its own
interpreter, since the child is shared per process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROGRAM = """
import asyncio, json, sys, time

if __name__ == "__mp_main__" and sys.argv[2:] == ["exit-in-child"]:
    # A child imports the main module again (spawn). One that cannot be, as
    # a server script without a __main__ guard that exits when its port is
    # taken, ends every child before it evaluates anything.
    sys.exit("the port is taken")

from gateway.config import RuleConfig
from gateway.retirement import EVALUATOR, Retirement


async def main():
    retirement = Retirement(seed=0)
    task = asyncio.create_task(retirement.run())
    row = (
        RuleConfig(retire_min_impressions=1000),
        ["v"],
        ["good", "poor"],
        [20000.0, 20000.0],
        [2000.0, 600.0],
        [(0, 2)],
    )
    deadline = time.monotonic() + float(sys.argv[1])
    statuses = None
    while statuses is None and time.monotonic() < deadline:
        statuses = retirement.row_statuses(*row)[0]
        await asyncio.sleep(0.05)
    print(json.dumps({"statuses": statuses, "children": EVALUATOR.child_pids()}))
    sys.stdout.flush()
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main())
"""


def _run(folder: Path, wait_s: float, *args: str) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    program = folder / "serve.py"
    program.write_text(PROGRAM)
    return subprocess.Popen(
        [sys.executable, str(program), str(wait_s), *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
    )


def _answer(process: subprocess.Popen[str]) -> dict:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, f"the program ended without an answer ({process.poll()})"
    return json.loads(line)


def _kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL, as the OOM killer or a supervisor's kill timeout sends: no
    exit handler runs in the program."""
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.stdout is not None
    process.stdout.close()


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_the_child_ends_when_the_gateway_is_killed_outright(tmp_path):
    process = _run(tmp_path, 60)
    try:
        answer = _answer(process)
        assert answer["statuses"] == ["active", "retired"]
        [child] = answer["children"]
        assert _running(child)
    finally:
        _kill(process)
    # Nothing of the killed program told the child: it has to notice by itself.
    deadline = time.monotonic() + 10
    while _running(child):
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            pytest.fail(f"retirement child {child} outlived its gateway")
        time.sleep(0.1)


def test_a_child_that_cannot_start_leaves_the_rule_to_a_thread(tmp_path):
    process = _run(tmp_path, 30, "exit-in-child")
    try:
        answer = _answer(process)
    finally:
        _kill(process)
    assert answer == {"statuses": ["active", "retired"], "children": []}
