"""A polling Modbus bus stops when cancelled, wherever the cancel lands — also inside pymodbus.

On Python 3.11 ``asyncio.wait_for`` (what pymodbus awaits its answer and the port's opening
with) returns the result and drops the cancel when the answer is in before the task resumed
(CPython gh-86296). A bus that swallowed its cancel kept polling forever and hung the gateway's
shutdown (issue 3: ``sensegate demo`` with a bus failed to exit in 4 runs of 5).

The UART link (``drivers.serial_link.SerialLink``) had a cancel dropped in the same way, in its
session's clean-up; its test is at the end (it belongs in tests/gateway/test_serial_link.py).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from drivers import SERIAL_CODECS
from drivers.modbus_bus import ModbusBus, PortSettings
from drivers.modbus_profiles import builtin_profiles
from drivers.serial_link import LinkDown, LinkItem, SerialLink
from gateway.clock import SystemClock, VirtualClock
from gateway.errors import TransportError
from gateway.models import Observation
from simulators.modbus_detector import PtyModbusBus, SimDetector

PROFILES = builtin_profiles()
GAS, SMOKE = PROFILES["GENERIC-GAS"], PROFILES["GENERIC-SMOKE"]
STOP_WITHIN = 2.0  # seconds; a stop takes milliseconds, the bound only keeps a hang from being silent


async def _emit(device_id: str, observations: list[Observation], raw: str) -> None:
    pass


async def _stops(task: asyncio.Task[None]) -> bool:
    """Cancel ``task``; True if it ended cancelled within the bound."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=STOP_WITHIN)
    if not done:
        task.cancel()  # leave nothing behind: a second cancel is not lost
        await asyncio.wait({task}, timeout=STOP_WITHIN)
        return False
    return task.cancelled()


class _AnswerAndCancel:
    """A client twin whose answer (or opened port) is in at the very moment its task is cancelled,
    awaited through ``asyncio.wait_for`` as pymodbus does."""

    def __init__(self, unit: SimDetector, at: str) -> None:
        self.unit = unit
        self.at = at  # "connect" or "read": where the cancel lands
        self.reads = 0

    @property
    def connected(self) -> bool:
        return True

    async def _answered_while_cancelled(self, value: Any) -> Any:
        answer = asyncio.get_running_loop().create_future()
        answer.set_result(value)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # the shutdown arrives together with the answer
        return await asyncio.wait_for(answer, timeout=1.0)

    async def connect(self) -> bool:
        return bool(await self._answered_while_cancelled(True)) if self.at == "connect" else True

    def close(self) -> None:
        pass

    async def read_holding_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Any:
        from pymodbus.pdu.register_message import ReadHoldingRegistersRequest

        self.reads += 1
        answer = self.unit.answer(ReadHoldingRegistersRequest(address=address, count=count, dev_id=device_id))
        return await self._answered_while_cancelled(answer) if self.at == "read" else answer

    async def read_input_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Any:
        raise AssertionError("the gas profile reads holding registers")


@pytest.mark.parametrize("at", ["connect", "read"])
async def test_a_cancel_that_arrives_with_the_answer_is_not_lost(at: str) -> None:
    clients: list[_AnswerAndCancel] = []

    def factory(settings: PortSettings) -> _AnswerAndCancel:
        clients.append(_AnswerAndCancel(SimDetector(1, GAS), at))
        return clients[-1]

    bus = ModbusBus("p", [("gas", 1, GAS)], VirtualClock(), client_factory=factory)
    task = asyncio.create_task(bus.run(_emit))
    # The cancel is issued by the bus's own first call: nothing else needs to happen.
    done, _ = await asyncio.wait({task}, timeout=STOP_WITHIN)
    assert done and task.cancelled(), "the bus swallowed its cancel and went on polling"
    assert len(clients) == 1 and clients[0].reads == (1 if at == "read" else 0)


@pytest.mark.integration
async def test_a_polling_bus_stops_wherever_it_is_cancelled(tmp_path: Path) -> None:
    """Real pymodbus through a real pty: cancel the bus at many random moments of its polls."""
    sim = PtyModbusBus(tmp_path / "ttyRS485")
    sim.add(1, GAS)
    sim.add(2, SMOKE)
    sim.open()
    rng = random.Random(3)
    stuck: list[float] = []
    try:
        for _ in range(200):
            bus = ModbusBus(
                str(sim.link),
                [("gas", 1, GAS), ("smoke", 2, SMOKE)],
                SystemClock(),
                poll_interval=0.001,  # back to back: a cancel lands inside a request most of the time
                timeout=0.2,
            )
            task = asyncio.create_task(bus.run(_emit))
            after = rng.uniform(0.0, 0.02)
            await asyncio.sleep(after)
            if not await _stops(task):
                stuck.append(round(after, 4))
    finally:
        sim.close()
    assert sim.answered > 100  # the cancels did land among answered polls
    assert not stuck, f"{len(stuck)} of 200 cancels lost (cancelled after … s): {stuck}"


# ------------------------------------------------------------------ the UART link


class _LostPort:
    """A port that is lost at once (the adapter was unplugged)."""

    async def read(self) -> bytes:
        raise TransportError("unplugged")

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


async def test_a_serial_link_cancelled_while_it_winds_down_a_lost_port_stops() -> None:
    async def opener(path: str, baudrate: int) -> _LostPort:
        return _LostPort()

    link = SerialLink("p", SERIAL_CODECS["mr60fda1"], VirtualClock(), opener=opener)
    task: asyncio.Task[None] | None = None

    async def handle(item: LinkItem) -> None:
        if isinstance(item, LinkDown):
            assert task is not None
            # the shutdown arrives while the session stops its watchdog
            asyncio.get_running_loop().call_soon(task.cancel)

    task = asyncio.create_task(link.run(handle))
    done, _ = await asyncio.wait({task}, timeout=STOP_WITHIN)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=STOP_WITHIN)
    assert done and task.cancelled(), "the link swallowed its cancel and went on reopening"
