"""What the byte-stream codecs (the UART radars) share: the result of ``split`` and the codec
interface the serial transport drives.

A serial line carries a stream, not messages: a read may end in the middle of a frame, hold
several frames, or start with line noise. ``split(buffer)`` finds the whole frames at the front
of ``buffer`` and says how many bytes it is done with::

    result = codec.split(buffer)
    del buffer[: result.used]          # frames and garbage consumed; a partial frame stays
    for frame in result.frames: ...    # each one whole, checksums verified
    result.skipped                     # bytes thrown away while resynchronising (noise, bad frames)
    result.bad_checksums               # frames whose header was plausible but sum/tail was wrong

``Split`` is a named tuple, so ``used, frames, *_ = codec.split(buffer)`` works too. A codec
never throws bytes away that could still be the start of a frame: ``used`` stops before any
partial frame at the end of the buffer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

from gateway.models import Family, Observation


class Split(NamedTuple):
    used: int  # bytes consumed from the front of the buffer (frames + skipped)
    frames: list[bytes]  # whole, verified frames, in order
    skipped: int = 0  # garbage bytes dropped while looking for a header (resync)
    bad_checksums: int = 0  # candidate frames rejected for their checksum or tail


class FrameCodec(Protocol):
    """The module interface of a UART codec (``drivers.mr60fda1``, ``drivers.mr60fda2``)."""

    NAME: str
    FAMILY: Family
    MODELS: dict[str, str]  # model name → description
    EMITS: frozenset[str]  # kinds decode can return

    def split(self, buffer: bytes | bytearray) -> Split: ...

    def decode(self, frame: bytes) -> list[Observation]: ...

    def encode(self, observation: Observation) -> bytes: ...

    def keepalive(self) -> bytes | None: ...

    def startup_commands(self, settings: Mapping[str, float]) -> Sequence[bytes]: ...
