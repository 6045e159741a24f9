"""MR60FDA2 / LD6002C TinyFrame codec: PROTOCOLS.md §1.2 byte examples, framing, commands, fuzz."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers import mr60fda2
from gateway.errors import PayloadError
from gateway.models import Kind, Observation

GOLDEN = [
    ("01 00 00 00 01 0E 02 F3 01 FE", [Observation(Kind.FALL_DETECTED)]),
    ("01 00 00 00 01 0E 02 F3 00 FF", [Observation(Kind.FALL_CLEARED)]),
    ("01 00 00 00 01 0F 09 F9 01 FE", [Observation(Kind.PRESENCE, {"present": True})]),
    ("01 00 00 00 00 0E 06 F6", []),  # get parameters (host → radar), LEN 0: no data checksum
    ("01 00 00 00 00 21 10 CF", []),  # factory reset
]
FRAMES = [bytes.fromhex(h) for h, _ in GOLDEN]
STREAM = b"".join(FRAMES)
EXPECTED = [obs for _, expect in GOLDEN for obs in expect]


def feed(chunks: list[bytes]) -> tuple[list[bytes], int, int]:
    buffer = bytearray()
    frames: list[bytes] = []
    skipped = bad = 0
    for chunk in chunks:
        buffer += chunk
        result = mr60fda2.split(buffer)
        del buffer[: result.used]
        frames += result.frames
        skipped += result.skipped
        bad += result.bad_checksums
    return frames, skipped, bad


@pytest.mark.parametrize(("hexframe", "expect"), GOLDEN, ids=[h for h, _ in GOLDEN])
def test_golden_frames(hexframe: str, expect: list[Observation]) -> None:
    frame = bytes.fromhex(hexframe)
    assert mr60fda2.split(frame) == (len(frame), [frame], 0, 0)
    assert mr60fda2.decode(frame) == expect
    for obs in expect:
        assert mr60fda2.encode(obs) == frame


def test_the_id_is_ignored() -> None:
    with_id = mr60fda2.frame(mr60fda2.FALL, b"\x01", frame_id=0x1234)
    assert with_id[1:3] == b"\x12\x34"
    assert mr60fda2.decode(with_id) == [Observation(Kind.FALL_DETECTED)]


def test_stream_split_at_every_offset_and_byte_by_byte() -> None:
    for cut in range(len(STREAM) + 1):
        assert feed([STREAM[:cut], STREAM[cut:]]) == (FRAMES, 0, 0), cut
    frames, skipped, bad = feed([bytes([b]) for b in STREAM])
    assert (frames, skipped, bad) == (FRAMES, 0, 0)
    assert [o for f in frames for o in mr60fda2.decode(f)] == EXPECTED


def test_noise_before_and_between() -> None:
    noise = b"\x01\x01\x00\xfe\x01garbage\x00"  # SOF bytes whose header checksum fails
    frames, skipped, bad = feed([noise + FRAMES[0] + noise + FRAMES[2] + noise + b"\x00" * 8])
    assert frames == [FRAMES[0], FRAMES[2]]
    assert skipped == 3 * len(noise) + 8 and bad == 0


def test_corrupted_checksums() -> None:
    bad_data = bytearray(FRAMES[0])
    bad_data[-1] ^= 0xFF
    bad_head = bytearray(FRAMES[2])
    bad_head[7] ^= 0x10
    frames, skipped, bad = feed([FRAMES[1] + bytes(bad_data) + bytes(bad_head) + FRAMES[2]])
    assert frames == [FRAMES[1], FRAMES[2]]
    assert bad == 1  # a bad data checksum is a damaged frame; a bad header checksum is resync
    assert skipped == len(bad_data) + len(bad_head)
    for broken in (bad_data, bad_head):
        with pytest.raises(PayloadError) as info:
            mr60fda2.decode(bytes(broken))
        assert info.value.reason == "bad_checksum"


def test_absurd_length_is_refused_at_the_header() -> None:
    head = bytes([0x01, 0, 0, 0x7F, 0xFF, 0x0E, 0x02])
    absurd = head + bytes([(~(0x01 ^ 0x7F ^ 0xFF ^ 0x0E ^ 0x02)) & 0xFF])
    frames, skipped, _ = feed([absurd + FRAMES[0]])
    assert frames == [FRAMES[0]] and skipped == len(absurd)


def test_host_commands() -> None:
    assert mr60fda2.get_parameters(0) == bytes.fromhex("01 00 00 00 00 0E 06 F6")
    assert mr60fda2.factory_reset(0) == bytes.fromhex("01 00 00 00 00 21 10 CF")
    cmd = mr60fda2.set_install_height(2.5, 0x8001)
    msg_type, frame_id, data = mr60fda2.parse(cmd)
    assert (msg_type, frame_id, struct.unpack("<f", data)) == (mr60fda2.SET_HEIGHT, 0x8001, (2.5,))
    msg_type, _, data = mr60fda2.parse(mr60fda2.set_sensitivity(15))
    assert (msg_type, data) == (mr60fda2.SET_SENSITIVITY, b"\x0f\x00\x00\x00")
    for bad in (lambda: mr60fda2.set_sensitivity(31), lambda: mr60fda2.set_install_height(9.0)):
        with pytest.raises(PayloadError):
            bad()
    startup = mr60fda2.startup_commands({"install_height": 2.2, "fall_threshold": 0.6, "sensitivity": 15})
    assert [mr60fda2.parse(c)[0] for c in startup] == [
        mr60fda2.SET_HEIGHT,
        mr60fda2.SET_THRESHOLD,
        mr60fda2.SET_SENSITIVITY,
        mr60fda2.GET_PARAMETERS,
    ]
    assert [mr60fda2.parse(c)[1] for c in startup] == [0x8000, 0x8001, 0x8002, 0x8003]


def test_parameters_reply_is_a_heartbeat_with_the_settings() -> None:
    data = struct.pack("<ffI4f", 2.2, 0.6, 15, -1.0, 1.0, 1.5, -1.5)
    (obs,) = mr60fda2.decode(mr60fda2.frame(mr60fda2.GET_PARAMETERS, data, 7))
    assert obs.kind == Kind.HEARTBEAT and obs.values["sensitivity"] == 15
    assert obs.values["install_height"] == pytest.approx(2.2) and obs.values["fall_threshold"] == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (mr60fda2.frame(mr60fda2.FALL, b"\x02"), "bad_value"),
        (mr60fda2.frame(mr60fda2.FALL, b"\x01\x00"), "bad_length"),
        (mr60fda2.frame(mr60fda2.GET_PARAMETERS, b"\x00" * 5), "bad_length"),
        (mr60fda2.frame(0x4242, b"\x01"), "unknown_code"),
        (b"\x01\x00", "bad_frame"),
    ],
)
def test_malformed_frames(frame: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        mr60fda2.decode(frame)
    assert info.value.reason == reason


F32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
OBSERVATIONS = st.one_of(
    st.sampled_from([Observation(Kind.FALL_DETECTED), Observation(Kind.FALL_CLEARED)]),
    st.builds(lambda p: Observation(Kind.PRESENCE, {"present": p}), st.booleans()),
    st.builds(
        lambda h, t, s: Observation(Kind.HEARTBEAT, {"install_height": h, "fall_threshold": t, "sensitivity": s}),
        F32,
        F32,
        st.integers(0, 2**32 - 1),
    ),
)


@given(st.lists(st.tuples(OBSERVATIONS, st.integers(0, 0x7FFF)), max_size=6), st.lists(st.integers(0, 300), max_size=4))
def test_round_trip_through_any_cut(items: list[tuple[Observation, int]], cuts: list[int]) -> None:
    stream = b"".join(mr60fda2.encode(o, i) for o, i in items)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    frames, skipped, bad = feed(chunks)
    assert [o for f in frames for o in mr60fda2.decode(f)] == [o for o, _ in items]
    assert skipped == bad == 0


@given(st.binary(max_size=300))
def test_fuzz_split_and_decode_raise_nothing_but_payload_error(data: bytes) -> None:
    result = mr60fda2.split(data)
    assert 0 <= result.used <= len(data)
    for frame in [*result.frames, data]:
        with contextlib.suppress(PayloadError):
            mr60fda2.decode(frame)


@given(st.binary(max_size=40), st.sampled_from(FRAMES[:3]), st.binary(max_size=40))
def test_a_good_frame_survives_any_noise_around_it(before: bytes, frame: bytes, after: bytes) -> None:
    frames, _, _ = feed([before + frame + after])
    assert frame in frames
