"""Shared pytest fixtures.

Real servers (session-scoped: started once per test run, on free loopback ports, in temp dirs;
see tests/servers.py). A test that stops or kills one must start it again before it returns —
``server.start()`` in a ``finally``, or the ``ensure_started`` fixture — because the next test
gets the same instance. Give each test its own database / topic / metric names rather than
relying on an empty server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TypeVar

import pytest

from tests.servers import InfluxDB1, Mosquitto, Server, ServerError, VictoriaMetrics

S = TypeVar("S", bound=Server)


def _serve(factory: type[S]) -> Iterator[S]:
    try:
        server = factory()
    except ServerError as exc:  # binary missing: fail loudly, never skip
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


# ---------------------------------------------------------------------------------------------
# Real servers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="session")
def _config_files_only_their_owner_may_write() -> Iterator[None]:
    """Whatever the user's umask (002 on many desktops), the site configs tests write are not
    group-writable: every command refuses a config file others may write (docs/configuration.md)."""
    umask = os.umask(0o022)
    yield
    os.umask(umask)


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Mosquitto]:
    """A running Mosquitto 2.0 broker with persistence; ``.host`` / ``.port``, ``.restart()``."""
    yield from _serve(Mosquitto)


@pytest.fixture(scope="session")
def influxdb_v1() -> Iterator[InfluxDB1]:
    """A running InfluxDB 1.x; ``.url``, ``.create_database()``, ``.query()``, ``.stop()`` / ``.start()``."""
    yield from _serve(InfluxDB1)


@pytest.fixture(scope="session")
def victoriametrics() -> Iterator[VictoriaMetrics]:
    """A running VictoriaMetrics; ``.url``, ``.wait_for_samples()``, ``.export()``, ``.stop()``."""
    yield from _serve(VictoriaMetrics)


@pytest.fixture
def ensure_started() -> Iterator[list[Server]]:
    """Append a server a test stops; it is started again afterwards even if the test fails."""
    servers: list[Server] = []
    yield servers
    for server in servers:
        if not server.running:
            server.start()


# ---------------------------------------------------------------------------------------------
# Lead's fixtures (runtime, store, config) go below this line.
# ---------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    # Here, not in tests/faults/conftest.py: pytest registers options only from the root conftest.
    parser.addoption(
        "--faults-long",
        action="store_true",
        help="run the fault suite (tests/faults) long: minutes of load and dozens of kills, not CI's short mode "
        "(or set SENSEGATE_FAULTS=long)",
    )
