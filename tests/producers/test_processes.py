"""Children of the demo stop, whatever happens to the demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from producers.processes import ChildFailed, ProcessGroup

# A child that starts a grandchild in its own process group, then waits.
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    return state != "Z"


def wait_for_line(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.strip():
            return text.strip().splitlines()[0]
        time.sleep(0.05)
    raise AssertionError(f"{path} stayed empty")


def test_leaving_the_block_stops_children_and_grandchildren(tmp_path) -> None:
    with ProcessGroup(tmp_path, grace_s=2.0) as group:
        child = group.start("parent", [sys.executable, "-c", PARENT], {})
        grandchild = int(wait_for_line(child.log_path))
        assert alive(child.process.pid) and alive(grandchild)
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.process.poll() is not None
    assert not alive(grandchild)


def test_an_error_in_the_block_still_stops_every_child(tmp_path) -> None:
    with pytest.raises(RuntimeError), ProcessGroup(tmp_path, grace_s=2.0) as group:
        child = group.start("sleeper", [sys.executable, "-c", PARENT], {})
        wait_for_line(child.log_path)
        raise RuntimeError("a step failed")
    assert child.process.poll() is not None


def test_a_child_that_dies_is_reported_with_its_log(tmp_path) -> None:
    with ProcessGroup(tmp_path) as group:
        group.start(
            "learner",
            [
                sys.executable,
                "-c",
                "print('cannot reach the broker'); raise SystemExit(3)",
            ],
            {},
        )
        time.sleep(1.0)
        with pytest.raises(ChildFailed, match="cannot reach the broker"):
            group.check_alive("learner")
        with pytest.raises(ChildFailed, match="code 3"):
            group.run("again", [sys.executable, "-c", "raise SystemExit(3)"], {}, 10)


def test_sigterm_to_the_demo_runs_its_cleanup(tmp_path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from producers.processes import ProcessGroup, sigterm_as_interrupt
        with sigterm_as_interrupt(), ProcessGroup(Path({str(tmp_path)!r})) as group:
            child = group.start("sleeper", [sys.executable, "-c",
                                "import time; time.sleep(600)"], {{}})
            print(child.process.pid, flush=True)
            time.sleep(600)
        """
    )
    demo = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    child_pid = int(demo.stdout.readline())
    assert alive(child_pid)
    demo.send_signal(signal.SIGTERM)
    demo.wait(timeout=20)
    demo.stdout.close()
    deadline = time.monotonic() + 5
    while alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child_pid)


def test_a_service_given_restarts_is_started_again_then_reported(tmp_path) -> None:
    with ProcessGroup(tmp_path) as group:
        child = group.start(
            "learner", [sys.executable, "-c", "raise SystemExit(1)"], {}, restarts=1
        )
        first = child.process.pid
        child.process.wait(timeout=10)
        group.check_alive("learner")  # started again
        assert child.process.pid != first and child.restarts_done == 1
        child.process.wait(timeout=10)
        with pytest.raises(ChildFailed, match="code 1"):
            group.check_alive("learner")
