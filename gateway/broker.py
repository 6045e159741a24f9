"""A local MQTT broker for the demo: Mosquitto when it is installed, else embedded amqtt.

Production gateways talk to the block's own broker (usually Mosquitto, configured in the
site config). The demo must work on a machine with nothing installed, so it brings one:
``mosquitto`` from PATH, started in a temporary directory on a free loopback port, or the
pure-Python amqtt broker running in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from gateway.errors import TransportError

log = logging.getLogger("sensegate.broker")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_for_port(port: int, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if loop.time() > deadline:
                raise TransportError(f"local broker did not listen on 127.0.0.1:{port} within {within:.0f} s") from None
            await asyncio.sleep(0.05)


def _find_mosquitto() -> str | None:
    # Debian puts it in /usr/sbin, which is not on every user's PATH.
    found = shutil.which("mosquitto")
    return found or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


class LocalBroker:
    """``async with LocalBroker() as broker:`` → ``broker.host``, ``broker.port``, ``broker.kind``."""

    def __init__(self, prefer: str = "auto", port: int | None = None) -> None:
        self.prefer = prefer  # "auto" | "mosquitto" | "amqtt"
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.kind = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._amqtt: Any = None

    async def __aenter__(self) -> LocalBroker:
        mosquitto = _find_mosquitto()
        if self.prefer in ("auto", "mosquitto") and mosquitto:
            self._spawn_mosquitto(mosquitto)
            await _wait_for_port(self.port)
        elif self.prefer == "mosquitto":
            raise TransportError("mosquitto is not installed (apt-get install mosquitto)")
        else:
            await self._start_amqtt()
        log.info("local %s broker on %s:%d", self.kind, self.host, self.port)
        return self

    def _spawn_mosquitto(self, binary: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="sensegate-broker-")
        conf = Path(self._tmp.name) / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self._tmp.name}/\n"
            "max_inflight_messages 1000\n"
            "max_queued_messages 100000\n"
            "set_tcp_nodelay true\n"
        )
        log_file = open(Path(self._tmp.name) / "mosquitto.log", "wb")  # noqa: SIM115 - lives with the process
        self._proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log_file, stderr=subprocess.STDOUT)
        self.kind = "mosquitto"

    async def _start_amqtt(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._amqtt = Broker(config)
        await self._amqtt.start()  # listening once this returns (a probe would only log noise)
        self.kind = "amqtt (embedded)"

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._amqtt is not None:
            with contextlib.suppress(Exception):
                await self._amqtt.shutdown()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._tmp is not None:
            self._tmp.cleanup()
