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

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, NamedTuple, Protocol

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


Status = Literal["frame", "partial", "bad", "resync"]
# What starts at a header position: ("frame", length) for a whole verified frame, ("partial", 0)
# when more bytes are needed, ("bad", 0) for a wrong checksum or tail, ("resync", 0) for an
# impossible length.
FrameAt = Callable[[bytes | bytearray, int], tuple[Status, int]]


def split_stream(buffer: bytes | bytearray, header: bytes, at: FrameAt) -> Split:
    """The resynchronising ``split`` of a header-delimited frame format.

    A rejected candidate loses only its first byte (a real frame may start inside it), and a
    partial candidate is given up when a whole valid frame follows it: noise that looks like a
    header with a huge length must not hold a fall report back.
    """
    frames: list[bytes] = []
    pos = skipped = bad = 0
    end = len(buffer)
    while pos < end:
        start = buffer.find(header, pos)
        if start < 0:
            keep = _header_prefix_at_end(buffer, header, pos)  # maybe the first half of a header
            skipped += end - keep - pos
            pos = end - keep
            break
        skipped += start - pos
        pos = start
        status, total = at(buffer, pos)
        if status == "frame":
            frames.append(bytes(buffer[pos : pos + total]))
            pos += total
            continue
        if status == "partial" and not _later_frame(buffer, pos, header, at):
            break  # read more
        bad += status == "bad"
        pos += 1
        skipped += 1
    return Split(pos, frames, skipped, bad)


def _later_frame(buffer: bytes | bytearray, pos: int, header: bytes, at: FrameAt) -> bool:
    nxt = buffer.find(header, pos + 1)
    while nxt >= 0:
        if at(buffer, nxt)[0] == "frame":
            return True
        nxt = buffer.find(header, nxt + 1)
    return False


def _header_prefix_at_end(buffer: bytes | bytearray, header: bytes, pos: int) -> int:
    for k in range(min(len(header) - 1, len(buffer) - pos), 0, -1):
        if buffer[len(buffer) - k :] == header[:k]:
            return k
    return 0
