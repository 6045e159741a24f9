"""The systemd notify protocol: a running gateway tells a fake $NOTIFY_SOCKET READY=1, pings
WATCHDOG=1 every half WatchdogSec from its event loop, stops pinging while the loop is blocked
(so systemd would restart it), and says STOPPING=1 at shutdown."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.systemd import SystemdNotify
from tests.gateway.factories import minimal_site
from tests.gateway.harness import running, site_config
from tests.servers import Mosquitto


class FakeSystemd:
    """A bound AF_UNIX datagram socket, as systemd's notify socket. A thread receives, so each
    message is timed when it arrives, even while the gateway's (this test's) loop is blocked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.got: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.got.append((time.monotonic(), data.decode()))

    def states(self) -> list[str]:
        return [line for _, msg in list(self.got) for line in msg.split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def fake_systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify.sock")
    yield fake
    fake.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notify = SystemdNotify.from_environment({})
    assert not notify.enabled and notify.watchdog_interval is None and not notify.notify("READY=1")


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_the_named_pid() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
    assert SystemdNotify.from_environment(env).watchdog_interval == 15.0
    assert SystemdNotify.from_environment({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 15.0
    assert SystemdNotify.from_environment({**env, "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_abstract_socket_address(tmp_path: Path) -> None:
    name = f"sensegate-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        assert SystemdNotify("@" + name).notify("READY=1")
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_a_missing_socket_is_logged_once_and_not_raised(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    notify = SystemdNotify(str(tmp_path / "gone.sock"), 1_000_000)
    assert not notify.notify("WATCHDOG=1") and not notify.notify("WATCHDOG=1")
    assert len([r for r in caplog.records if "cannot notify systemd" in r.message]) == 1


async def test_a_running_gateway_says_ready_pings_the_watchdog_and_stops_when_its_loop_hangs(
    mosquitto: Mosquitto, tmp_path: Path, fake_systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(fake_systemd.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # WatchdogSec=0.2 s: a ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    config = site_config(minimal_site(), tmp_path, mosquitto.host, mosquitto.port)
    async with running(config):
        await asyncio.sleep(0.6)
        states = fake_systemd.states()
        assert "READY=1" in states
        assert states.index("READY=1") < len(states) - 1
        assert states.count("WATCHDOG=1") >= 4
        # A blocking call on the loop: no ping for as long as it blocks.
        fake_systemd.got.clear()
        blocked_at = time.monotonic()
        time.sleep(1.0)  # noqa: ASYNC251 — the hang under test
        unblocked_at = time.monotonic()
        await asyncio.sleep(0.35)
        pings = [t for t, msg in list(fake_systemd.got) if msg == "WATCHDOG=1"]
        assert not [t for t in pings if blocked_at + 0.05 < t < unblocked_at - 0.05]
        assert [t for t in pings if t >= unblocked_at]  # and it pings again once the loop runs
    assert "STOPPING=1" in fake_systemd.states()
