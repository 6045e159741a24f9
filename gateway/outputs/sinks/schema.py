"""SenseGate's InfluxDB schema: how one ``Event`` becomes one point. Pure functions, no I/O.

Both InfluxDB sinks (and anything that reads their data back) rely on this; it is documented
with a worked example in docs/influxdb.md — change the two together.

::

    measurement  event.family            door | fall | smoke | sos | gas | water | presence
    tags         site, gateway           from the gateway's config
                 building, unit,         event.location (empty values are left out)
                 household, room
                 device, model           event.device_id, event.model
                 event                   event.kind       (door_opened, fall_detected, …)
                 source                  event.source     (zigbee2mqtt, rtl_433, native, …)
                 test                    "true" for a test (event.is_test: a device in test
                                         mode, or the device's own test signal); left out
                                         otherwise, so a real event's tag set is unchanged
    fields       <each key of event.values> but ``test`` (the tag says it)
                     bool   -> boolean
                     number -> float, always (an int 100 then 96.5 would be a type conflict)
                     str    -> string
                 seq          integer   the gateway's store sequence number
                 received_at  float     epoch seconds when the gateway received it
                 time_source  string    "device" or "gateway": whose clock event_time is
    time         ns = ms(event_time) * 1_000_000 + seq % 1_000_000

The sub-millisecond nanoseconds of the timestamp carry the store sequence number: two events of
one device in the same millisecond stay two points, and a batch replayed after a lost
acknowledgement (same seq, same time, same tags) overwrites its own points instead of
duplicating them. InfluxDB keeps one point per (measurement, tag set, time), so this rule, the
tag set and the field names are the identity of a stored event.

A key of ``event.values`` that collides with ``seq``, ``received_at``, ``time_source`` or
``time`` (InfluxDB refuses that one), or is empty, is stored as ``value_<key>``. Non-finite
floats (NaN, ±inf) are left out: line protocol cannot carry them. ``event.raw`` is not stored.

Names and tag values are stored as ``line_protocol.storable`` makes them: as they are, except
what line protocol cannot carry (a backslash before ``,`` ``=`` space ``"`` or at the end
becomes ``＼``; a newline or a lone surrogate becomes U+FFFD). ``event_tags`` and
``event_fields`` return them in that stored form, so what they say is what a query returns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from gateway.clock import yield_interpreter
from gateway.models import TEST, Event, Family, Kind, Scalar
from gateway.outputs.sinks import line_protocol
from gateway.outputs.sinks.line_protocol import FieldValue, storable, storable_string

TAG_KEYS = (
    "site",
    "gateway",
    "building",
    "unit",
    "household",
    "room",
    "device",
    "model",
    "event",
    "source",
    "test",
)
# Field names the schema uses itself, plus "time", which InfluxDB refuses as a field key.
RESERVED_FIELDS = frozenset({"seq", "received_at", "time_source", "time"})


def point_time_ns(event: Event) -> int:
    """The point's timestamp in ns: event time truncated to the ms, plus ``seq % 1_000_000`` ns.

    ``event_time`` is first rounded to the microsecond so that float noise
    (``1717000000.123 * 1000 == 1717000000122.9998``) does not move it to the previous ms.
    """
    ms = round(event.event_time * 1_000_000) // 1000
    return ms * 1_000_000 + event.seq % 1_000_000


def event_tags(event: Event, gateway_id: str, site: str) -> dict[str, str]:
    """The tag set, in ``TAG_KEYS`` order, without empty values."""
    loc = event.location
    tags = {
        "site": site,
        "gateway": gateway_id,
        "building": loc.building,
        "unit": loc.unit,
        "household": loc.household,
        "room": loc.room,
        "device": event.device_id,
        "model": event.model,
        "event": event.kind.value,
        "source": event.source,
        "test": "true" if event.is_test else "",
    }
    return {k: storable(v) for k, v in tags.items() if v}


def field_value(value: Scalar) -> bool | float | str:
    """The stored type of one event value: bool stays bool, every number is a float, text stays
    text (a lone surrogate in it becomes U+FFFD)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    return storable_string(str(value))


def field_name(key: str) -> str:
    """The stored name of the field for the event value ``key``."""
    return storable(f"value_{key}" if key in RESERVED_FIELDS or not key else key)


def event_fields(event: Event) -> dict[str, FieldValue]:
    """The field set as stored. Two keys that are stored under one name (``a\\`` and ``a＼``):
    the later one in ``event.values`` wins; the schema's own three fields always do."""
    fields: dict[str, FieldValue] = {}
    values: Mapping[str, Scalar] = event.values
    for key, value in values.items():
        if key == TEST:
            continue  # the tag: a field of the same name would shadow it in queries
        fields[field_name(key)] = field_value(value)
    fields["seq"] = int(event.seq)
    fields["received_at"] = float(event.received_at)
    fields["time_source"] = storable_string(event.time_source)
    return fields


def events_to_line_protocol(events: Iterable[Event], gateway_id: str, site: str) -> bytes:
    """The events as InfluxDB line protocol (UTF-8, one line each, ns precision).

    Byte for byte ``line_protocol.line(family, event_tags(…), event_fields(…), point_time_ns(…))``
    per event (tests/sinks/test_line_protocol.py holds it to that), written without the dicts,
    sorts and escaping passes those make for every event: the tag keys are fixed, so their order
    is; a name with nothing to escape (nearly all) is written as it is; the names of families,
    kinds and value keys are worked out once."""
    gateway_tag = ",gateway=" + line_protocol.name(gateway_id) if gateway_id else ""
    site_tag = ",site=" + line_protocol.name(site) if site else ""
    lines = [_line(e, gateway_tag, site_tag) for e in events]
    return "\n".join(text for text in lines if text).encode("utf-8")


def events_to_line_protocol_in_pieces(events: Sequence[Event], gateway_id: str, site: str) -> bytes:
    """``events_to_line_protocol``, for a sink's worker thread: ``LINES_A_PIECE`` events at a
    time (1,000 events are some 5 ms of work), letting other threads have the interpreter
    between pieces (``gateway.clock.yield_interpreter``: an alarm's commit waits for it)."""
    pieces = []
    for start in range(0, len(events), LINES_A_PIECE):
        piece = events_to_line_protocol(events[start : start + LINES_A_PIECE], gateway_id, site)
        if piece:
            pieces.append(piece)
        yield_interpreter()
    return b"\n".join(pieces)


LINES_A_PIECE = 128  # ~0.6 ms of work

# What ``line_protocol.name`` changes: a name without any of these is written as it is. (A tab
# or NUL matters only at the start, a backslash only before some characters: either sends the
# name through ``name`` anyway.)
_NOT_PLAIN = re.compile(r"[,= \n\\\t\x00\ud800-\udfff]")
_MEASUREMENTS = {f: line_protocol.name(f.value) for f in Family}
_EVENT_TAGS = {k: ",event=" + line_protocol.name(k.value) for k in Kind}
# Value key → (its stored field name, as written with its "="); value keys are few (the codecs'
# names), but what a native device sends is not ours to bound: past this many the rest are not
# kept. The same for the field time_source ("gateway" or "device"), written whole.
_FIELD_KEYS: dict[str, tuple[str, str]] = {}
_TIME_SOURCES: dict[str, str] = {}
_FIELD_KEYS_KEEP = 1024


def _line(e: Event, gateway_tag: str, site_tag: str) -> str:
    loc = e.location
    # The tags in the order of their keys: building, device, event, gateway, household, model,
    # room, site, source, test, unit (empty ones left out).
    building, device, household, model, room, source, unit = raw = (
        loc.building,
        e.device_id,
        loc.household,
        e.model,
        loc.room,
        e.source,
        loc.unit,
    )
    if _NOT_PLAIN.search("".join(raw)) is not None:
        building, device, household, model, room, source, unit = (line_protocol.name(t) for t in raw)
    tags = "".join(
        (
            ",building=" + building if building else "",
            ",device=" + device if device else "",
            _EVENT_TAGS[e.kind],
            gateway_tag,
            ",household=" + household if household else "",
            ",model=" + model if model else "",
            ",room=" + room if room else "",
            site_tag,
            ",source=" + source if source else "",
            ",test=true" if e.is_test else "",
            ",unit=" + unit if unit else "",
        )
    )
    # Each field as written ("" for a value line protocol cannot carry), by its stored name: two
    # value keys stored under one name, the later wins, as in event_fields.
    fields: dict[str, str] = {}
    for key, value in e.values.items():
        if key == TEST:
            continue
        names = _FIELD_KEYS.get(key)
        if names is None:
            stored = field_name(key)
            names = (stored, line_protocol.name(stored) + "=")
            if len(_FIELD_KEYS) < _FIELD_KEYS_KEEP:
                _FIELD_KEYS[key] = names
        text = _value_text(value)
        fields[names[0]] = names[1] + text if text is not None else ""
    fields["seq"] = f"seq={int(e.seq)}i"
    received_at = _float_text(float(e.received_at))
    fields["received_at"] = "received_at=" + received_at if received_at is not None else ""
    time_source = _TIME_SOURCES.get(e.time_source)
    if time_source is None:
        time_source = "time_source=" + str(line_protocol.field_value(storable_string(e.time_source)))
        if len(_TIME_SOURCES) < _FIELD_KEYS_KEEP:
            _TIME_SOURCES[e.time_source] = time_source
    fields["time_source"] = time_source
    field_text = ",".join([text for _, text in sorted(fields.items()) if text])
    return f"{_MEASUREMENTS[e.family]}{tags} {field_text} {point_time_ns(e)}"


def _value_text(value: Scalar) -> str | None:
    """``line_protocol.field_value(field_value(value))``, the usual types first."""
    kind = type(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is float or kind is int:
        return _float_text(float(value))
    return line_protocol.field_value(field_value(value))


def _float_text(value: float) -> str | None:
    """``line_protocol.field_value`` of a float."""
    if value - value != 0.0:  # NaN or ±inf: line protocol cannot carry them
        return None
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text
