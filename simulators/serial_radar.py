"""A fall radar on a real pseudo-terminal: the serial twin of the MR60FDA1 and MR60FDA2 drivers.

``RadarSim`` is the radar's behaviour as frames — every byte comes from the driver's own codec
(``encode``, ``frame``), never from format strings here. ``PtyRadar`` puts it on a pty pair made
with ``os.openpty()`` and points a symlink you choose (``tmp/ttyRADAR``, standing in for
``/dev/serial/by-id/…``) at the slave side, so the gateway opens it like a USB serial adapter::

    radar = PtyRadar(tmp_path / "ttyRADAR", "mr60fda1")
    radar.open()                       # /dev/pts/N, symlinked
    await radar.fall(recover=False)    # moving → fall → stationary → residence
    radar.noise(40)                    # line noise (never contains a valid frame)
    radar.write(frame, chunks=3)       # one frame split over three writes
    radar.vanish(); radar.reappear()   # unplugged, then back as a new /dev/pts/M, same symlink
    radar.silent = True                # powered but mute: only the idle timeout notices

``run(stop)`` is the idle radar: a heartbeat every ``heartbeat_interval`` and, for the MR60FDA1,
the body-movement parameter every ``level_interval`` (1 s on the real module). Host commands
are read from the pty and answered: an MR60FDA2 applies install height, fall threshold and
sensitivity and answers the parameters query. Writes that nobody reads (the gateway has the
port closed and the pty buffer is full) are dropped and counted, as bytes on a real UART are.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
from collections.abc import Sequence
from pathlib import Path

from drivers import SERIAL_CODECS, mr60fda2
from drivers.framing import FrameCodec
from gateway.clock import Clock, SystemClock
from gateway.errors import PayloadError
from gateway.models import Kind, Observation
from simulators.pty import PtyPort


class RadarSim:
    """The radar's state and the frames it sends; no I/O."""

    def __init__(self, protocol: str = "mr60fda1") -> None:
        self.protocol = protocol
        self.codec: FrameCodec = SERIAL_CODECS[protocol]
        self.present = False
        self.fallen = False
        self.level = 0
        self.settings: dict[str, float] = {"install_height": 2.2, "fall_threshold": 0.6, "sensitivity": 15}
        self.commands: list[bytes] = []  # host → radar frames received
        self._id = 0

    def can(self, kind: Kind) -> bool:
        if kind == Kind.MOTION or kind == Kind.RESIDENCE:
            return self.protocol == "mr60fda1"
        return kind.value in self.codec.EMITS

    def report(self, kind: Kind, **values: bool | int | str) -> bytes:
        """The frame for one observation, or ``b""`` when this radar has no such frame."""
        if not self.can(kind):
            return b""
        obs = Observation(kind, values)
        if self.protocol == "mr60fda2":
            self._id = (self._id + 1) & 0x7FFF  # the radar's ids keep the MSB clear
            return mr60fda2.encode(obs, self._id)
        return self.codec.encode(obs)

    def heartbeat(self) -> bytes:
        if self.protocol == "mr60fda2":
            return self.parameters()
        return self.report(Kind.HEARTBEAT)

    def parameters(self) -> bytes:
        s = self.settings
        values = {
            "install_height": _f32(s["install_height"]),
            "fall_threshold": _f32(s["fall_threshold"]),
            "sensitivity": int(s["sensitivity"]),
        }
        return mr60fda2.encode(Observation(Kind.HEARTBEAT, values), self._next_id())

    def _next_id(self) -> int:
        self._id = (self._id + 1) & 0x7FFF
        return self._id

    def command(self, frame: bytes) -> list[bytes]:
        """Apply one host → radar frame; return the replies."""
        self.commands.append(frame)
        if self.protocol != "mr60fda2":
            return []
        try:
            msg_type, _, data = mr60fda2.parse(frame)
        except PayloadError:
            return []
        if msg_type == mr60fda2.SET_HEIGHT and len(data) == 4:
            self.settings["install_height"] = struct.unpack("<f", data)[0]
        elif msg_type == mr60fda2.SET_THRESHOLD and len(data) == 4:
            self.settings["fall_threshold"] = struct.unpack("<f", data)[0]
        elif msg_type == mr60fda2.SET_SENSITIVITY and len(data) == 4:
            self.settings["sensitivity"] = struct.unpack("<I", data)[0]
        elif msg_type == mr60fda2.GET_PARAMETERS and not data:
            return [self.parameters()]
        return []


def _f32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def noise_bytes(rng: random.Random, n: int, protocol: str) -> bytes:
    """``n`` random bytes in which the codec finds no frame (so a test knows what to expect)."""
    codec = SERIAL_CODECS[protocol]
    while True:
        data = bytes(rng.randrange(256) for _ in range(n))
        if not codec.split(data + b"\x00" * 16).frames:
            return data


class PtyRadar(PtyPort):
    def __init__(
        self,
        link: str | Path,
        protocol: str = "mr60fda1",
        *,
        clock: Clock | None = None,
        heartbeat_interval: float = 5.0,
        level_interval: float = 1.0,
        seed: int = 1,
    ) -> None:
        super().__init__(link)
        self.sim = RadarSim(protocol)
        self.clock = clock or SystemClock()
        self.heartbeat_interval = heartbeat_interval
        self.level_interval = level_interval
        self.rng = random.Random(seed)
        self.silent = False  # powered but mute (a hung radar): nothing is written
        self.sent_frames = 0
        self.dropped_bytes = 0
        self._inbox = bytearray()

    # ------------------------------------------------------------------ the pty

    def received(self, data: bytes) -> None:
        """Configuration commands from the gateway (MR60FDA2 settings, queries): answered."""
        self._inbox += data
        result = self.sim.codec.split(self._inbox)
        del self._inbox[: result.used]
        for frame in result.frames:
            for reply in self.sim.command(frame):
                self.write(reply)

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes, chunks: int = 1) -> None:
        """Write bytes to the line, optionally in ``chunks`` separate writes (split frames)."""
        if not data or self.silent or not self.is_open:
            return
        size = max(1, -(-len(data) // max(1, chunks)))
        for i in range(0, len(data), size):
            part = data[i : i + size]
            try:
                written = os.write(self._master, part)
            except (BlockingIOError, OSError):
                written = 0
            self.dropped_bytes += len(part) - written

    def send(self, kind: Kind, chunks: int = 1, **values: bool | int | str) -> bytes:
        frame = self.sim.report(kind, **values)
        if frame:
            self.write(frame, chunks)
            self.sent_frames += 1
        return frame

    def noise(self, n: int = 32) -> bytes:
        data = noise_bytes(self.rng, n, self.sim.protocol)
        self.write(data)
        return data

    # ------------------------------------------------------------------ behaviour

    def presence(self, present: bool) -> None:
        self.sim.present = present
        self.send(Kind.PRESENCE, present=present)
        self.send(Kind.MOTION, state="moving" if present else "none")

    async def fall(self, recover: bool = False, still_after: float = 5.0, recover_after: float = 10.0) -> None:
        """Someone present falls: fall reported, then stillness and residence, or getting up."""
        if not self.sim.present:
            self.presence(True)
        self.sim.fallen = True
        self.send(Kind.FALL_DETECTED)
        self.send(Kind.MOTION, state="stationary")
        self.sim.level = 0
        if recover:
            await self.clock.sleep(recover_after)
            self.sim.fallen = False
            self.send(Kind.FALL_CLEARED)
            self.send(Kind.MOTION, state="moving")
            self.sim.level = 40
        else:
            await self.clock.sleep(still_after)
            self.send(Kind.RESIDENCE, present=True)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """The idle radar: heartbeats and (MR60FDA1) the body-movement parameter every second."""
        stop = stop or asyncio.Event()
        next_beat = self.clock.monotonic()
        while not stop.is_set():
            now = self.clock.monotonic()
            if now >= next_beat:
                self.write(self.sim.heartbeat())
                next_beat = now + self.heartbeat_interval
            if self.sim.protocol == "mr60fda1":
                level = self.sim.level if self.sim.present and not self.sim.fallen else 0
                self.send(Kind.MOTION, level=max(0, min(100, level + self.rng.randint(-3, 3))) if level else 0)
            await self.clock.sleep(self.level_interval if self.sim.protocol == "mr60fda1" else self.heartbeat_interval)


def script_frames(protocol: str, kinds: Sequence[tuple[Kind, dict[str, bool | int | str]]]) -> bytes:
    """Frames for a list of (kind, values), concatenated (for tests that feed bytes directly)."""
    sim = RadarSim(protocol)
    return b"".join(sim.report(kind, **values) for kind, values in kinds)
