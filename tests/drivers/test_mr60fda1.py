"""MR60FDA1 codec: the PROTOCOLS.md §1.1 byte examples, framing under every cut, round trip, fuzz."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers import mr60fda1
from gateway.errors import PayloadError
from gateway.models import Kind, Observation

# (frame as printed in PROTOCOLS.md, what it decodes to)
GOLDEN = [
    ("53 59 83 01 00 01 01 32 54 43", [Observation(Kind.FALL_DETECTED)]),
    ("53 59 83 01 00 01 00 31 54 43", [Observation(Kind.FALL_CLEARED)]),
    ("53 59 80 01 00 01 01 2F 54 43", [Observation(Kind.PRESENCE, {"present": True})]),
    ("53 59 80 02 00 01 02 31 54 43", [Observation(Kind.MOTION, {"state": "moving"})]),
    ("53 59 83 05 00 01 01 36 54 43", [Observation(Kind.RESIDENCE, {"present": True})]),
    ("53 59 01 01 00 01 0F BE 54 43", [Observation(Kind.HEARTBEAT)]),  # MR24HPC1 heartbeat query bytes
    ("53 59 01 02 00 01 0F BF 54 43", []),  # reset
    ("53 59 02 A4 00 01 0F 62 54 43", []),  # firmware query
    ("53 59 02 A1 00 01 0F 5F 54 43", []),  # product query
]
FRAMES = [bytes.fromhex(h) for h, _ in GOLDEN]
STREAM = b"".join(FRAMES)
EXPECTED = [obs for _, expect in GOLDEN for obs in expect]


def feed(chunks: list[bytes]) -> tuple[list[bytes], int, int]:
    """Feed chunks as reads from a port; return frames, skipped bytes and bad checksums."""
    buffer = bytearray()
    frames: list[bytes] = []
    skipped = bad = 0
    for chunk in chunks:
        buffer += chunk
        result = mr60fda1.split(buffer)
        del buffer[: result.used]
        frames += result.frames
        skipped += result.skipped
        bad += result.bad_checksums
    return frames, skipped, bad


def decode_all(frames: list[bytes]) -> list[Observation]:
    return [o for f in frames for o in mr60fda1.decode(f)]


@pytest.mark.parametrize(("hexframe", "expect"), GOLDEN, ids=[h for h, _ in GOLDEN])
def test_golden_frames(hexframe: str, expect: list[Observation]) -> None:
    frame = bytes.fromhex(hexframe)
    assert mr60fda1.split(frame) == (len(frame), [frame], 0, 0)
    assert mr60fda1.decode(frame) == expect
    for obs in expect:
        assert mr60fda1.encode(obs) == frame or obs.kind == Kind.HEARTBEAT


def test_checksum_example_from_the_wiki() -> None:
    # The wiki's tip prints the bytes of the A2 query but the sum of the A1 (product) query:
    # 53+59+02+A1+00+01+0F = 0x15F. The A1 frame quoted in the sources ends in 5F.
    assert mr60fda1.checksum(bytes([0x53, 0x59, 0x02, 0xA1, 0x00, 0x01, 0x0F])) == 0x5F
    assert mr60fda1.checksum(bytes([0x53, 0x59, 0x02, 0xA2, 0x00, 0x01, 0x0F])) == 0x60
    assert mr60fda1.reset() == bytes.fromhex("53 59 01 02 00 01 0F BF 54 43")


def test_stream_split_at_every_offset() -> None:
    for cut in range(len(STREAM) + 1):
        frames, skipped, bad = feed([STREAM[:cut], STREAM[cut:]])
        assert (frames, skipped, bad) == (FRAMES, 0, 0), cut


def test_stream_byte_by_byte() -> None:
    frames, skipped, bad = feed([bytes([b]) for b in STREAM])
    assert frames == FRAMES and skipped == bad == 0
    assert decode_all(frames) == EXPECTED


def test_noise_before_and_between_is_skipped_and_counted() -> None:
    noise = b"\x00\xff\x53\x12\x59\x54\x43garbage\x53"
    stream = noise + FRAMES[0] + noise + FRAMES[4] + noise
    frames, skipped, bad = feed([stream])
    assert frames == [FRAMES[0], FRAMES[4]]
    # the last noise ends in 0x53 (could start a header): it is kept, not yet skipped
    assert skipped == 3 * len(noise) - 1 and bad == 0
    for size in (1, 3, 7):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert feed(chunks)[0] == [FRAMES[0], FRAMES[4]]


def test_corrupted_checksum_and_tail_are_counted_and_good_frames_around_them_decode() -> None:
    bad_sum = bytearray(FRAMES[0])
    bad_sum[-3] ^= 0x01
    bad_tail = bytearray(FRAMES[1])
    bad_tail[-1] = 0x00
    stream = FRAMES[2] + bytes(bad_sum) + FRAMES[3] + bytes(bad_tail) + FRAMES[4]
    frames, skipped, bad = feed([stream])
    assert frames == [FRAMES[2], FRAMES[3], FRAMES[4]]
    assert bad == 2 and skipped == 2 * len(FRAMES[0])
    with pytest.raises(PayloadError) as info:
        mr60fda1.decode(bytes(bad_sum))
    assert info.value.reason == "bad_checksum"


def test_absurd_length_is_not_waited_for() -> None:
    absurd = bytes.fromhex("53 59 83 01 7F FF")  # 32 KiB of "data": noise that looks like a header
    frames, skipped, bad = feed([absurd + FRAMES[0]])
    assert frames == [FRAMES[0]] and skipped == len(absurd) and bad == 0


def test_a_real_frame_inside_a_bogus_candidate_is_found() -> None:
    bogus = bytes.fromhex("53 59 80 01 00 05")  # claims 5 data bytes; a real frame starts 6 bytes in
    frames, _, bad = feed([bogus + FRAMES[0] + FRAMES[1]])
    assert frames == [FRAMES[0], FRAMES[1]] and bad == 1


def test_query_replies_decode_like_reports() -> None:
    reply = mr60fda1.frame(0x80, 0x81, b"\x01")
    assert mr60fda1.decode(reply) == [Observation(Kind.PRESENCE, {"present": True})]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (mr60fda1.frame(0x83, 0x01, b"\x02"), "bad_value"),
        (mr60fda1.frame(0x80, 0x02, b"\x03"), "bad_value"),
        (mr60fda1.frame(0x80, 0x03, b"\x65"), "bad_value"),
        (mr60fda1.frame(0x83, 0x01, b""), "bad_length"),
        (mr60fda1.frame(0x42, 0x42, b"\x01"), "unknown_code"),
        (b"\x53\x59\x83", "bad_frame"),
        (bytes.fromhex("53 59 83 01 00 02 01 32 54 43"), "bad_length"),
    ],
)
def test_malformed_frames(frame: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        mr60fda1.decode(frame)
    assert info.value.reason == reason


OBSERVATIONS = st.one_of(
    st.sampled_from([Observation(Kind.FALL_DETECTED), Observation(Kind.FALL_CLEARED), Observation(Kind.HEARTBEAT)]),
    st.builds(lambda p: Observation(Kind.PRESENCE, {"present": p}), st.booleans()),
    st.builds(lambda p: Observation(Kind.RESIDENCE, {"present": p}), st.booleans()),
    st.builds(lambda s: Observation(Kind.MOTION, {"state": s}), st.sampled_from(mr60fda1.MOTION_STATES)),
    st.builds(lambda n: Observation(Kind.MOTION, {"level": n}), st.integers(0, 100)),
)


@given(st.lists(OBSERVATIONS, max_size=8), st.lists(st.integers(0, 200), max_size=4))
def test_round_trip_through_any_cut(observations: list[Observation], cuts: list[int]) -> None:
    stream = b"".join(mr60fda1.encode(o) for o in observations)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    frames, skipped, bad = feed(chunks)
    assert decode_all(frames) == observations and skipped == bad == 0


@given(st.binary(max_size=300))
def test_fuzz_split_and_decode_raise_nothing_but_payload_error(data: bytes) -> None:
    result = mr60fda1.split(data)
    assert 0 <= result.used <= len(data)
    assert result.used + 10 >= len(data) - sum(len(f) for f in result.frames) - result.skipped
    for frame in [*result.frames, data]:
        with contextlib.suppress(PayloadError):
            mr60fda1.decode(frame)


@given(st.binary(max_size=40), st.sampled_from(FRAMES[:5]), st.binary(max_size=40))
def test_a_good_frame_survives_any_noise_around_it(before: bytes, frame: bytes, after: bytes) -> None:
    # Noise may itself contain (or complete) a valid frame, or a header claiming a long length
    # that the good frame would sit behind: the good one must still come out, at once.
    frames, _, _ = feed([before + frame + after])
    assert frame in frames


def test_encode_refuses_what_no_frame_says() -> None:
    refused = [
        Observation(Kind.SMOKE_ALARM),
        Observation(Kind.MOTION, {"level": 101}),
        Observation(Kind.FALL_DETECTED, {}, 1.0),
    ]
    for obs in refused:
        with pytest.raises(PayloadError) as info:
            mr60fda1.encode(obs)
        assert info.value.reason == "not_encodable"
