"""Devices as they stand: the ``device_state`` table, one row per device that has reported,
kept by the store's writer in the transaction that stores its events (``EventsStore.append``).

The console's pages (household card, building grid, device list) read a device's last report,
battery, link quality and state from here instead of scanning ``events`` on every page load;
the events may be pruned to make room, the summary never is (one short row per device).

Cost per batch: the events are folded in memory (``fold``) and written with one upsert per
device that appears in the batch, whatever the number of its events. A field the batch says
nothing about keeps its stored value (``coalesce``), so a battery report does not forget the
door's state and a door event does not forget the battery.

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
from gateway.store.base import StoreBase

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
    events INTEGER NOT NULL
) WITHOUT ROWID;
"""

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
    return {device: DeviceState(*row) for device, row in _fold(events)[0].items()}


# A device's partial state while a batch is folded: a list of DeviceState's fields, in its order
# (device_id first), which is also the upsert's.
_LAST_SEEN, _LAST_KIND, _ONLINE, _ONLINE_AT, _BATTERY, _BATTERY_AT, _BATTERY_LOW = range(1, 8)
_LINK, _TAMPER, _FAULT, _STATE, _STATE_AT, _ACTIVITY_AT, _EVENTS = range(8, 15)


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


def _fold(events: Iterable[Event]) -> tuple[dict[str, list[Any]], set[str]]:
    """``fold`` as rows (DeviceState's fields in a list: one list per device, not one
    DeviceState per event), and the devices whose online state changed after their first report
    in the batch: for those ``online_at`` is the batch's whatever the stored state was (for the
    others it is only when the batch's state differs from the stored one)."""
    out: dict[str, list[Any]] = {}
    flipped: set[str] = set()
    for ev in events:
        kind = ev.kind
        if kind is _VISIT:
            continue  # a visitor's check-in (pseudo-device "visits") is no report from a device
        device = ev.device_id
        s = out.get(device)
        if s is None:
            s = out[device] = [device, None, "", None, None, None, None, None, None, None, None, "", None, None, 0]
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
    return out, flipped


_UPSERT = """
INSERT INTO device_state(device_id, last_seen, last_kind, online, online_at, battery, battery_at, battery_low,
    link_quality, tamper, fault, state, state_at, activity_at, events)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
ON CONFLICT(device_id) DO UPDATE SET
    last_kind = CASE WHEN excluded.last_seen IS NOT NULL THEN excluded.last_kind ELSE last_kind END,
    last_seen = max(coalesce(last_seen, excluded.last_seen), coalesce(excluded.last_seen, last_seen)),
    online_at = CASE WHEN ?16 OR (excluded.online IS NOT NULL AND excluded.online IS NOT online)
        THEN excluded.online_at ELSE online_at END,
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
    events = events + excluded.events
"""


def upsert_device_states(db: sqlite3.Connection, events: Sequence[Event]) -> None:
    """Inside the transaction that stores ``events``: one upsert per device in the batch."""
    if not events:
        return
    rows, flipped = _fold(events)
    for s in rows.values():
        for i in (_ONLINE, _BATTERY_LOW, _TAMPER, _FAULT):
            if s[i] is not None:
                s[i] = int(s[i])
        s.append(s[0] in flipped)
    db.executemany(_UPSERT, rows.values())


_COLUMNS = (
    "device_id, last_seen, last_kind, online, online_at, battery, battery_at, battery_low, link_quality, "
    "tamper, fault, state, state_at, activity_at, events"
)


def _flag(value: int | None) -> bool | None:
    return None if value is None else value == 1


def _row(r: tuple[Any, ...]) -> DeviceState:
    # REAL columns come back as float or None, INTEGER flags as 0, 1 or None: only the flags
    # need converting (this runs for every device on a site page: 20,000 rows).
    (device_id, last_seen, last_kind, online, online_at, battery, battery_at, low, link, tamper, fault, state,
     state_at, activity_at, events) = r  # fmt: skip
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
        """The summary of every device that has reported, or of ``device_ids`` among them."""
        with self._lock:
            if device_ids is None:
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM device_state").fetchall()
            else:
                wanted = sorted(set(device_ids))
                rows = []
                for start in range(0, len(wanted), 500):  # SQLite's limit on parameters
                    chunk = wanted[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows += self._db.execute(
                        f"SELECT {_COLUMNS} FROM device_state WHERE device_id IN ({marks})", chunk
                    ).fetchall()
        return {str(r[0]): _row(r) for r in rows}
