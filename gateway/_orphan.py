"""Ending a process of the gateway whose parent died without stopping it.

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

__all__ = ["PARENT_CHECK_S", "follow_parent"]

PARENT_CHECK_S = 0.5
"""How often a process looks whether its parent is still the one it had."""


def follow_parent(parent: int, end: Callable[[], None], name: str) -> None:
    """Call ``end`` in a daemon thread once ``parent`` is no longer this
    process's parent (it died; the process was handed to another)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        end()

    threading.Thread(target=watch, name=name, daemon=True).start()
