"""Ending a process of the gateway whose parent died without stopping it, and
keeping the gateway's children out of the way of its requests.

A process learns nothing when its parent is killed: the retirement child
waits on a queue whose pipe it holds both ends of, and a worker of `keyart
gateway --workers N` goes on serving the port, unsupervised, for good. Each
of them runs :func:`follow_parent`, which notices within
:data:`PARENT_CHECK_S` that it was handed to another parent and ends it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

__all__ = ["CHILD_NICE", "PARENT_CHECK_S", "follow_parent", "step_aside"]

PARENT_CHECK_S = 0.5
"""How often a process looks whether its parent is still the one it had."""

CHILD_NICE = 10
"""How much lower the gateway's children (decision log, retirement rule) run.

Nothing waits for them: the decision log is buffered and the retirement
statuses are cached. When the cores are contended the scheduler should run
the process that answers requests first; at nice 10 a child still gets about
a tenth of a contended core, more than either needs at 500 rows a second."""


def step_aside() -> None:
    """Lower this process's CPU priority by :data:`CHILD_NICE`, if allowed."""
    try:
        os.nice(CHILD_NICE)
    except OSError:  # a container without the right to renice: run as is
        pass


def follow_parent(parent: int, end: Callable[[], None], name: str) -> None:
    """Call ``end`` in a daemon thread once ``parent`` is no longer this
    process's parent (it died; the process was handed to another)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        end()

    threading.Thread(target=watch, name=name, daemon=True).start()
