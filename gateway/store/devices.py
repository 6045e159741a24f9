"""Devices as they stand: the ``device_state`` table, one row per device that has reported,
folded from the stored events by the store that keeps the disk, a few times a minute at most
(``EventsStore``: write-behind, see below).

The console's pages (household card, building grid, device list) read a device's last report,
battery, link quality and state from here instead of scanning ``events`` on every page load;
the events may be pruned to make room, the summary never is (one short row per device).

Write-behind: an upsert per device per batch dirtied a page of its own per device (the rows are
in device order, the traffic is not): with 20,000 devices, half of what a commit wrote. Now the
events are the log and this table a summary of it up to a point. Each row has ``seq``, the last
event folded into it; meta ``device_state.seq`` (``SUMMARY_SEQ``) says that every event up to it
is folded. The store that keeps the disk folds the events it commits into memory
(``DeviceTail``) and writes the tail out in passes (``EventsStore._summarise_step``), key range by
key range, each row then holding everything up to its ``seq``. Whoever reads (the console, the
CLI, any process) gets the row with the fold of the device's events after its ``seq``
(``apply``): the answer is what an upsert per batch gave, at every moment and after any crash,
since the events are committed before they are acknowledged and a row only ever moves forward.

A fold is the same whether events come as one batch or one by one (a property test holds it to
that), so a tail folded over many batches is written with one upsert per device. A field the
events say nothing about keeps its stored value (``coalesce``), so a battery report does not
forget the door's state and a door event does not forget the battery.

What is kept, and from which events (``gateway.models.Kind``):

- ``last_seen`` / ``last_kind``: the receive time and kind of the latest report. A retained MQTT
  message replayed on (re)connect (``values.retained``) proves nothing about the device now: it
  sets the state but not ``last_seen``.
- ``online``: ``offline`` (the bridge's availability) → 0; ``online`` or any other fresh report
  → 1. ``online_at``: when it last changed.
- ``battery`` (percent) and ``battery_low``: ``battery_low`` → 1; a percent under 20 → 1, of 50
  or more → 0, in between unchanged (the smart_community pack's battery_low rule, and the Home
  Assistant bridge, use the same hysteresis).
- ``link_quality``: zigbee2mqtt's ``linkquality`` (LQI, 0–255), when a message carries it.
- ``tamper``: ``tamper`` → 1, ``tamper_clear`` → 0. ``fault``: ``sensor_fault`` → 1,
  ``heartbeat`` → 0.
- ``state`` / ``state_at``: the latest kind that is not supervision (door opened, smoke clear,
  presence …; ``presence:off`` and ``residence:off`` when ``present`` is false).
- ``activity_at``: the latest sign of a person (a door, an access grant, presence, motion, a
  press, a fall radar's report), at the event's time: a household's 最近活动.
- ``events``: how many events the device has sent since the table existed.

A store made before this table existed fills it as devices report again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.models import RETAINED, Event, Kind
from gateway.store.base import StoreBase, insert_rows

DEVICE_STATE_DDL = """
CREATE TABLE IF NOT EXISTS device_state (
    device_id TEXT PRIMARY KEY,
    last_seen REAL,
    last_kind TEXT NOT NULL,
    online INTEGER,
    online_at REAL,
    battery REAL,
    battery_at REAL,
    battery_low INTEGER,
    link_quality REAL,
    tamper INTEGER,
    fault INTEGER,
    state TEXT,
    state_at REAL,
    activity_at REAL,
    events INTEGER NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""
# meta key: every event with a seq up to its value is folded into device_state.
SUMMARY_SEQ = "device_state.seq"

BATTERY_LOW_BELOW = 20.0  # percent: low (the smart_community pack's battery_low rule)
BATTERY_OK_FROM = 50.0  # percent: no longer low
LINKQUALITY = "linkquality"  # zigbee2mqtt's LQI, kept by the codec in the values

SUPERVISION_KINDS = frozenset(
    {
        Kind.BATTERY,
        Kind.BATTERY_LOW,
        Kind.TAMPER,
        Kind.TAMPER_CLEAR,
        Kind.ONLINE,
        Kind.OFFLINE,
        Kind.HEARTBEAT,
        Kind.SENSOR_FAULT,
        Kind.VISIT,
    }
)
ACTIVITY_KINDS = frozenset(
    {
        Kind.DOOR_OPENED,
        Kind.DOOR_CLOSED,
        Kind.ACCESS_GRANTED,
        Kind.MOTION,
        Kind.SOS_PRESSED,
        Kind.SOS_CANCELLED,
        Kind.FALL_DETECTED,
        Kind.FALL_SUSPECTED,
        Kind.FALL_CLEARED,
    }
)
_PRESENT_KINDS = frozenset({Kind.PRESENCE, Kind.RESIDENCE})  # activity only when present


@dataclass(frozen=True, slots=True)
class DeviceState:
    """One device's summary; ``None``: never reported (or not since the table existed)."""

    device_id: str
    last_seen: float | None = None
    last_kind: str = ""
    online: bool | None = None
    online_at: float | None = None
    battery: float | None = None
    battery_at: float | None = None
    battery_low: bool | None = None
    link_quality: float | None = None
    tamper: bool | None = None
    fault: bool | None = None
    state: str = ""
    state_at: float | None = None
    activity_at: float | None = None
    events: int = 0


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _later(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def fold(events: Iterable[Event]) -> dict[str, DeviceState]:
    """What a batch of events (in stored order) says about each device: a partial state per
    device, ``None`` where the batch says nothing (the upsert keeps the stored value there)."""
    return {device: DeviceState(*row[:_SEQ_FIRST]) for device, row in _fold(events)[0].items()}


# A device's partial state while a batch is folded: a list of DeviceState's fields, in its order
# (device_id first), which is also the upsert's.
_LAST_SEEN, _LAST_KIND, _ONLINE, _ONLINE_AT, _BATTERY, _BATTERY_AT, _BATTERY_LOW = range(1, 8)
_LINK, _TAMPER, _FAULT, _STATE, _STATE_AT, _ACTIVITY_AT, _EVENTS = range(8, 15)
# After DeviceState's fields: the seq of the first and of the last event folded into the row.
_SEQ_FIRST, _SEQ_LAST = 15, 16


# Looked up once: an enum's member (Kind.TAMPER) or value costs a look-up through its class.
_KIND_TEXT = {k: k.value for k in Kind}
_VISIT, _OFFLINE, _BATTERY_KIND = Kind.VISIT, Kind.OFFLINE, Kind.BATTERY
_FLAGS = {
    Kind.BATTERY_LOW: (_BATTERY_LOW, True),
    Kind.TAMPER: (_TAMPER, True),
    Kind.TAMPER_CLEAR: (_TAMPER, False),
    Kind.SENSOR_FAULT: (_FAULT, True),
    Kind.HEARTBEAT: (_FAULT, False),
}


def _fold(
    events: Iterable[Event], out: dict[str, list[Any]] | None = None, flipped: set[str] | None = None
) -> tuple[dict[str, list[Any]], set[str]]:
    """``fold`` as rows (DeviceState's fields in a list: one list per device, not one
    DeviceState per event, then the seqs of its first and last event), and the devices whose
    online state changed after their first report in the batch: for those ``online_at`` is the
    batch's whatever the stored state was (for the others it is only when the batch's state
    differs from the stored one). Given ``out`` and ``flipped``, the events are folded on into
    them: the fold of everything given so far (``DeviceTail``)."""
    if out is None:
        out = {}
    if flipped is None:
        flipped = set()
    for ev in events:
        kind = ev.kind
        if kind is _VISIT:
            continue  # a visitor's check-in (pseudo-device "visits") is no report from a device
        device = ev.device_id
        s = out.get(device)
        if s is None:
            s = out[device] = [
                device, None, "", None, None, None, None, None, None, None, None, "", None, None, 0, ev.seq, 0
            ]  # fmt: skip
        values = ev.values
        text = _KIND_TEXT[kind]
        if values.get(RETAINED) is not True:
            s[_LAST_SEEN] = _later(s[_LAST_SEEN], ev.received_at)
            s[_LAST_KIND] = text
            now_online = kind is not _OFFLINE
            if s[_ONLINE] is None:
                s[_ONLINE], s[_ONLINE_AT] = now_online, ev.received_at
            elif s[_ONLINE] is not now_online:
                s[_ONLINE], s[_ONLINE_AT] = now_online, ev.received_at
                flipped.add(device)
        link = _number(values.get(LINKQUALITY))
        if link is not None:
            s[_LINK] = link
        if kind is _BATTERY_KIND:
            percent = _number(values.get("battery"))
            if percent is not None:
                s[_BATTERY], s[_BATTERY_AT] = percent, ev.event_time
                if percent < BATTERY_LOW_BELOW:
                    s[_BATTERY_LOW] = True
                elif percent >= BATTERY_OK_FROM:
                    s[_BATTERY_LOW] = False
        elif (flag := _FLAGS.get(kind)) is not None:
            s[flag[0]] = flag[1]
        if kind not in SUPERVISION_KINDS:
            present = values.get("present")
            off = kind in _PRESENT_KINDS and present is False
            s[_STATE], s[_STATE_AT] = text + ":off" if off else text, ev.event_time
            if kind in ACTIVITY_KINDS or (kind in _PRESENT_KINDS and present is True):
                s[_ACTIVITY_AT] = _later(s[_ACTIVITY_AT], ev.event_time)
        s[_EVENTS] += 1
        s[_SEQ_LAST] = ev.seq
    return out, flipped


_HEAD = """INSERT INTO device_state(device_id, last_seen, last_kind, online, online_at, battery, battery_at,
    battery_low, link_quality, tamper, fault, state, state_at, activity_at, events, seq)"""

# ``online_at`` is decided before the upsert (``write_rows``): the row's value when the online
# state changed, else NULL. A statement of many rows cannot name one row's own parameters.
_ON_CONFLICT = """ ON CONFLICT(device_id) DO UPDATE SET
    last_kind = CASE WHEN excluded.last_seen IS NOT NULL THEN excluded.last_kind ELSE last_kind END,
    last_seen = max(coalesce(last_seen, excluded.last_seen), coalesce(excluded.last_seen, last_seen)),
    online_at = coalesce(excluded.online_at, online_at),
    online = coalesce(excluded.online, online),
    battery = coalesce(excluded.battery, battery),
    battery_at = coalesce(excluded.battery_at, battery_at),
    battery_low = coalesce(excluded.battery_low, battery_low),
    link_quality = coalesce(excluded.link_quality, link_quality),
    tamper = coalesce(excluded.tamper, tamper),
    fault = coalesce(excluded.fault, fault),
    state = CASE WHEN excluded.state != '' THEN excluded.state ELSE state END,
    state_at = coalesce(excluded.state_at, state_at),
    activity_at = max(coalesce(activity_at, excluded.activity_at), coalesce(excluded.activity_at, activity_at)),
    events = events + excluded.events,
    seq = max(seq, excluded.seq)
"""


def upsert_device_states(db: sqlite3.Connection, events: Sequence[Event]) -> None:
    """In ``db``'s transaction: one upsert per device of ``events`` (a tool filling a store;
    the store itself writes its ``DeviceTail``)."""
    rows, flipped = _fold(events)
    stored = stored_rows(db, list(rows))
    write_rows(db, rows, flipped, {d: stored[d][1] if d in stored else None for d in rows})


def stored_rows(db: sqlite3.Connection, devices: Sequence[str]) -> dict[str, tuple[int, int | None]]:
    """The stored ``seq`` and ``online`` of those of ``devices`` that have a row."""
    out: dict[str, tuple[int, int | None]] = {}
    for start in range(0, len(devices), 500):  # SQLite's limit on parameters
        part = devices[start : start + 500]
        marks = ",".join("?" * len(part))
        for device, seq, online in db.execute(
            f"SELECT device_id, seq, online FROM device_state WHERE device_id IN ({marks})", part
        ):
            out[device] = (seq, online)
    return out


def write_rows(
    db: sqlite3.Connection, rows: dict[str, list[Any]], flipped: set[str], online: dict[str, int | None]
) -> None:
    """Upsert the folded rows of the devices in ``online`` (each with the seq of its last event
    folded), given each one's stored ``online`` (None: NULL or no row), many rows a statement."""
    params = []
    for device, was in online.items():
        s = rows[device]
        p = s[:_SEQ_FIRST]
        now = p[_ONLINE]
        # What the upsert did in SQL (``excluded.online IS NOT online``); ``apply`` is its twin.
        changed = device in flipped or (now is not None and (was is None or bool(was) is not now))
        if not changed:
            p[_ONLINE_AT] = None
        for i in (_ONLINE, _BATTERY_LOW, _TAMPER, _FAULT):
            if p[i] is not None:
                p[i] = int(p[i])
        p.append(s[_SEQ_LAST] or 0)
        params.append(p)
    insert_rows(db, _HEAD, params, _ON_CONFLICT)


class DeviceTail:
    """The fold of the stored events not yet in ``device_state``, per device: the events after
    ``base`` (meta ``device_state.seq`` when it was made, or moved on by a pass), up to ``to``;
    of a device whose row was written beyond ``base``, only the events after the row's ``seq``."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.to = base
        self.rows: dict[str, list[Any]] = {}
        self.flipped: set[str] = set()

    def add(self, events: Sequence[Event]) -> None:
        """Fold on ``events``, the ones stored right after ``to``, in order."""
        if events:
            _fold(events, self.rows, self.flipped)
            self.to = events[-1].seq

    def written(self, devices: Iterable[str]) -> None:
        """These devices' rows now hold everything folded for them."""
        for device in devices:
            self.rows.pop(device, None)
            self.flipped.discard(device)


def apply(stored: DeviceState | None, row: list[Any], flipped: bool) -> DeviceState:
    """What ``write_rows`` makes of a stored row and a folded one, computed instead of written."""
    if stored is None:
        return DeviceState(*row[:_SEQ_FIRST])
    p = row
    online = stored.online if p[_ONLINE] is None else p[_ONLINE]
    online_changed = flipped or (p[_ONLINE] is not None and p[_ONLINE] is not stored.online)
    return DeviceState(
        stored.device_id,
        _later(stored.last_seen, p[_LAST_SEEN]),
        p[_LAST_KIND] if p[_LAST_SEEN] is not None else stored.last_kind,
        online,
        p[_ONLINE_AT] if online_changed else stored.online_at,
        _coalesce(p[_BATTERY], stored.battery),
        _coalesce(p[_BATTERY_AT], stored.battery_at),
        _coalesce(p[_BATTERY_LOW], stored.battery_low),
        _coalesce(p[_LINK], stored.link_quality),
        _coalesce(p[_TAMPER], stored.tamper),
        _coalesce(p[_FAULT], stored.fault),
        p[_STATE] if p[_STATE] != "" else stored.state,
        _coalesce(p[_STATE_AT], stored.state_at),
        _later(stored.activity_at, p[_ACTIVITY_AT]),
        stored.events + p[_EVENTS],
    )


def _coalesce(new: Any, old: Any) -> Any:
    return old if new is None else new


_COLUMNS = (
    "device_id, last_seen, last_kind, online, online_at, battery, battery_at, battery_low, link_quality, "
    "tamper, fault, state, state_at, activity_at, events, seq"
)


def _flag(value: int | None) -> bool | None:
    return None if value is None else value == 1


def _row(r: tuple[Any, ...]) -> DeviceState:
    # REAL columns come back as float or None, INTEGER flags as 0, 1 or None: only the flags
    # need converting (this runs for every device on a site page: 20,000 rows).
    (device_id, last_seen, last_kind, online, online_at, battery, battery_at, low, link, tamper, fault, state,
     state_at, activity_at, events, _seq) = r  # fmt: skip
    return DeviceState(
        device_id,
        last_seen,
        last_kind,
        _flag(online),
        online_at,
        battery,
        battery_at,
        _flag(low),
        link,
        _flag(tamper),
        _flag(fault),
        state or "",
        state_at,
        activity_at,
        events,
    )


class DeviceStateStore(StoreBase):
    def device_states(self, device_ids: Iterable[str] | None = None) -> dict[str, DeviceState]:
        """The summary of every device that has reported, or of ``device_ids`` among them: its
        row with the events stored after it folded in."""
        wanted = None if device_ids is None else set(device_ids)
        with self._lock:
            if wanted is None:
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM device_state").fetchall()
            else:
                ordered = sorted(wanted)
                rows = []
                for start in range(0, len(ordered), 500):  # SQLite's limit on parameters
                    chunk = ordered[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows += self._db.execute(
                        f"SELECT {_COLUMNS} FROM device_state WHERE device_id IN ({marks})", chunk
                    ).fetchall()
            tail = self._device_tail(wanted, {str(r[0]): int(r[-1]) for r in rows})
            states = {str(r[0]): _row(r) for r in rows}
            for device, row in tail.rows.items():
                if wanted is None or device in wanted:
                    states[device] = apply(states.get(device), row, device in tail.flipped)
        return states

    def _device_tail(self, wanted: set[str] | None, row_seqs: dict[str, int]) -> DeviceTail:
        """The events after the summary, folded (lock held): ``EventsStore``'s."""
        raise NotImplementedError
