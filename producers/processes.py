"""The demo's keyart processes as children that always stop.

Each phase (``keyart streams``, ``keyart gateway``, ``keyart posters``) runs
as its own process in its own process group, with its output in a log file.
:class:`ProcessGroup` stops every child it started on the way out of its
``with`` block, also on Ctrl-C, SIGTERM or an error: SIGTERM to the child's
group, then SIGKILL after a grace period. On Linux each child also gets
SIGTERM when the demo dies without cleaning up (even by SIGKILL), so no
process is orphaned.

Examples
--------
>>> with ProcessGroup(Path("/tmp/logs")) as group:  # doctest: +SKIP
...     group.start("gateway", ["keyart", "gateway"], env)
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

__all__ = ["ChildFailed", "ProcessGroup", "keyart_argv", "sigterm_as_interrupt"]

logger = logging.getLogger("producers")


class ChildFailed(RuntimeError):
    """A child exited when it should have kept running, or with an error."""


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def keyart_argv(*args: str) -> list[str]:
    """Run a keyart subcommand with this interpreter (no PATH lookup)."""
    return [sys.executable, "-m", "keyart.cli", *args]


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str]
    env: dict[str, str]
    restarts_left: int = 0
    restarts_done: int = 0

    def tail(self, lines: int = 15) -> str:
        """The last lines of the child's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ProcessGroup:
    """Start keyart processes and stop every one of them on exit."""

    def __init__(self, log_dir: Path, grace_s: float = 10.0) -> None:
        self.log_dir = Path(log_dir)
        self.grace_s = grace_s
        self.children: dict[str, Child] = {}

    def _spawn(
        self, argv: Sequence[str], env: Mapping[str, str], log_path: Path
    ) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env},
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only sets a signal
            )

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        restarts: int = 0,
    ) -> Child:
        """Start ``argv`` as the child ``name`` with ``env`` added to ours.

        A service that stops on purpose when it loses Redis or the broker (and
        expects a supervisor to start it again, as the learner does) is given
        ``restarts``: :meth:`check_alive` starts it again that many times.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        process = self._spawn(argv, env, log_path)
        child = Child(name, process, log_path, list(argv), dict(env), restarts)
        self.children[name] = child
        logger.info("started %s (pid %s)", name, process.pid, extra={"child": name})
        return child

    def run(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        timeout: float,
        poll: Callable[[], None] | None = None,
    ) -> Child:
        """Start a child and wait for it to finish successfully.

        Raises
        ------
        ChildFailed
            When it exits non-zero or outlives ``timeout`` (it is then stopped).
        """
        child = self.start(name, argv, env)
        deadline = time.monotonic() + timeout
        while child.process.poll() is None:
            if time.monotonic() > deadline:
                self.stop(name)
                raise ChildFailed(f"{name} did not finish within {timeout:.0f} s")
            if poll is not None:
                poll()
            time.sleep(0.2)
        if child.process.returncode != 0:
            raise ChildFailed(
                f"{name} exited with code {child.process.returncode}; "
                f"its log ({child.log_path}) ends:\n{child.tail()}"
            )
        return child

    def check_alive(self, *names: str) -> None:
        """Raise :class:`ChildFailed` when one of the children has exited."""
        for name in names or tuple(self.children):
            child = self.children[name]
            code = child.process.poll()
            if code is not None and child.restarts_left > 0:
                child.restarts_left -= 1
                child.restarts_done += 1
                logger.warning(
                    "%s exited with code %s; starting it again (%s restarts left)",
                    name,
                    code,
                    child.restarts_left,
                    extra={"child": name},
                )
                child.process = self._spawn(child.argv, child.env, child.log_path)
                continue
            if code is not None:
                raise ChildFailed(
                    f"{name} exited with code {code}; its log "
                    f"({child.log_path}) ends:\n{child.tail()}"
                )

    def stop(self, name: str) -> None:
        """SIGTERM the child's process group; SIGKILL it after the grace period."""
        child = self.children.get(name)
        if child is None:
            return
        process = child.process
        for sig, wait in ((signal.SIGTERM, self.grace_s), (signal.SIGKILL, 5.0)):
            if process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=wait)
        # Whatever the child left in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        logger.info("stopped %s", name, extra={"child": name})

    def stop_all(self) -> None:
        for name in reversed(list(self.children)):
            self.stop(name)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the block, so cleanup runs."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
