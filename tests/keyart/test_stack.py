"""The launcher starts, stops and survives taken ports, leaving no process."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from keyart.settings import load_settings
from keyart.stack import LocalStack, StackError, free_port, port_is_free, read_state

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _topics(bootstrap: str) -> set[str]:
    from confluent_kafka.admin import AdminClient

    return set(
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    )


def test_start_creates_topics_and_stop_leaves_nothing(tmp_path: Path) -> None:
    settings = load_settings(
        state_dir=tmp_path,
        broker_port=0,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    stack = LocalStack(settings)
    info = stack.start()
    try:
        assert {"keyart.impressions", "keyart.clicks", "keyart.deadletter"} <= _topics(
            info.kafka_bootstrap
        )
        assert redis.Redis.from_url(info.redis_url).ping()
        assert info.redis_pid is not None  # nothing answered there: it started one
        state = json.loads((tmp_path / "stack.json").read_text())
        assert state["kafka_bootstrap"] == info.kafka_bootstrap
    finally:
        stack.stop()
    assert _wait_gone(info.broker_pid)
    assert _wait_gone(info.redis_pid)
    assert not (tmp_path / "stack.json").exists()


def _time_wait_on(port: int) -> bool:
    """Whether a TCP socket with local port ``port`` is in TIME_WAIT."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if int(local.rsplit(":", 1)[1], 16) == port and state == "06":
            return True
    return False


def _api_versions(client: socket.socket) -> None:
    """One Kafka ApiVersions (v0) round trip, so the broker holds the connection
    (a connection it has not accepted yet is reset, not closed, when it dies)."""
    client_id = b"keyart-test"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    client.sendall(struct.pack(">i", len(body)) + body)
    (size,) = struct.unpack(">i", client.recv(4, socket.MSG_WAITALL))
    assert len(client.recv(size, socket.MSG_WAITALL)) == size


def test_time_wait_does_not_hold_a_port() -> None:
    with socket.socket() as listener:
        # SO_REUSEADDR on the listener too, as the broker and Redis set it.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()
            assert client.recv(1) == b""
    assert _time_wait_on(port)
    assert port_is_free(port)
    assert free_port(port) == port


def test_configured_port_held_by_a_listener_fails_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not port_is_free(port)
        settings = load_settings(
            state_dir=tmp_path,
            broker_port=port,
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
        )
        with pytest.raises(StackError, match=rf"port {port} \(KEYART_BROKER_PORT\)"):
            LocalStack(settings).start()
    assert not (tmp_path / "stack.json").exists()


def test_previous_port_held_by_a_listener_fails_naming_the_state_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEYART_BROKER_PORT", raising=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # What a stack left after its broker crashed.
        left = {"kafka_bootstrap": f"127.0.0.1:{port}", "redis_url": "redis://x"}
        (tmp_path / "stack.json").write_text(json.dumps(left))
        settings = load_settings(state_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")
        with pytest.raises(StackError, match=rf"port {port}, .*stack\.json"):
            LocalStack(settings).start()


def test_broker_restarted_after_a_crash_keeps_its_port(tmp_path: Path, stack) -> None:
    """The tester's steps: kill -9 the broker while a client is connected, then
    start again at once, with the TIME_WAIT sockets still there."""
    port = free_port(0)
    settings = load_settings(
        state_dir=tmp_path, broker_port=port, redis_url=stack.redis_url
    )
    first = LocalStack(settings)
    second = LocalStack(settings)
    try:
        info = first.start()
        assert info.kafka_bootstrap == f"127.0.0.1:{port}"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            _api_versions(client)
            os.kill(info.broker_pid, signal.SIGKILL)
            assert _wait_gone(info.broker_pid)
            assert client.recv(1) == b""
        assert _time_wait_on(port)
        again = second.start()
        assert again.kafka_bootstrap == f"127.0.0.1:{port}"
        assert "keyart.impressions" in _topics(again.kafka_bootstrap)
    finally:
        second.stop()
        first.stop()


def test_existing_redis_is_used_not_restarted(tmp_path: Path, stack) -> None:
    settings = load_settings(
        state_dir=tmp_path, broker_port=0, redis_url=stack.redis_url
    )
    with LocalStack(settings) as info:
        assert info.redis_pid is None
        assert info.redis_url == stack.redis_url


def _cli(tmp_path: Path, *args: str, **kwargs):
    env = {
        **os.environ,
        "KEYART_STATE_DIR": str(tmp_path),
        "KEYART_BROKER_PORT": "0",
        "KEYART_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "keyart.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def _wait_state(tmp_path: Path, timeout: float = 40):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_state(tmp_path)
        if info is not None:
            return info
        time.sleep(0.2)
    raise AssertionError("keyart up wrote no state file")


def test_up_then_down_leaves_no_process(tmp_path: Path) -> None:
    up = _cli(tmp_path, "up")
    info = _wait_state(tmp_path)
    down = subprocess.run(
        [sys.executable, "-m", "keyart.cli", "down"],
        env={**os.environ, "KEYART_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert down.returncode == 0, down.stdout + down.stderr
    assert up.wait(timeout=30) == 0
    for pid in (info.broker_pid, info.redis_pid, up.pid):
        assert _wait_gone(pid), f"process {pid} outlived keyart down"


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    up = _cli(tmp_path, "up")
    info = _wait_state(tmp_path)
    up.send_signal(signal.SIGINT)
    assert up.wait(timeout=30) == 0
    assert _wait_gone(info.broker_pid) and _wait_gone(info.redis_pid)


def test_killed_launcher_takes_its_children(tmp_path: Path) -> None:
    up = _cli(tmp_path, "up")
    info = _wait_state(tmp_path)
    up.kill()
    up.wait(timeout=10)
    assert _wait_gone(info.broker_pid) and _wait_gone(info.redis_pid)


def test_detached_up_and_down(tmp_path: Path) -> None:
    up = _cli(tmp_path, "up", "--detach")
    output, _ = up.communicate(timeout=60)
    assert up.returncode == 0, output
    info = read_state(tmp_path)
    assert info is not None and _alive(info.broker_pid)
    status = subprocess.run(
        [sys.executable, "-m", "keyart.cli", "status", "--json"],
        env={**os.environ, "KEYART_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(status.stdout)["kafka_bootstrap"] == info.kafka_bootstrap
    subprocess.run(
        [sys.executable, "-m", "keyart.cli", "down"],
        env={**os.environ, "KEYART_STATE_DIR": str(tmp_path)},
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert _wait_gone(info.broker_pid) and _wait_gone(info.redis_pid)


def test_down_never_signals_processes_it_did_not_start(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        forged = {
            "kafka_bootstrap": "127.0.0.1:1",
            "redis_url": "redis://127.0.0.1:1/0",
            "broker_pid": bystander.pid,
            "redis_pid": 1,
            "owner_pid": bystander.pid,
        }
        (tmp_path / "stack.json").write_text(json.dumps(forged))
        assert read_state(tmp_path) is None  # not a broker: not "up"
        down = subprocess.run(
            [sys.executable, "-m", "keyart.cli", "down"],
            env={**os.environ, "KEYART_STATE_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert down.returncode == 0, down.stdout + down.stderr
        assert bystander.poll() is None, "keyart down killed a bystander"
    finally:
        bystander.kill()
        bystander.wait()


def test_up_status_and_down_show_the_redis_url_without_its_password(
    tmp_path: Path, redis_password_url: str
) -> None:
    from urllib.parse import urlsplit

    password = urlsplit(redis_password_url).password
    assert password
    shown = redis_password_url.replace(password, "***")
    env = {
        **os.environ,
        "KEYART_STATE_DIR": str(tmp_path),
        "KEYART_BROKER_PORT": "0",
        "KEYART_REDIS_URL": redis_password_url,
    }

    def keyart(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "keyart.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert password not in done.stdout + done.stderr
        return done.stdout

    up = keyart("up", "--detach")
    info = read_state(tmp_path)
    assert info is not None and info.redis_pid is None  # the Redis was there
    assert f"redis   {shown}\n" in up
    assert f"# KEYART_REDIS_URL as in the settings: {shown}\n" in up
    assert f"export KEYART_KAFKA_BOOTSTRAP={info.kafka_bootstrap}\n" in up
    assert f"already up: broker {info.kafka_bootstrap}, redis {shown}" in keyart("up")
    assert keyart("status") == f"up: broker {info.kafka_bootstrap}, redis {shown}\n"
    assert json.loads(keyart("status", "--json"))["redis_url"] == shown
    down = keyart("down")
    assert f"left redis {shown} running" in down
    assert _wait_gone(info.broker_pid)
