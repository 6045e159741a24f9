"""The visit check-in message (``<topic_prefix>/visits/checkin``): its topic, and its decoding into a
``visit`` event checked against the site's households and visitors. Pure, no I/O (docs/visits.md).

The registry decodes MQTT check-ins with ``decode_checkin``; the visit record that goes with a
check-in is built in ``gateway.care.checkin``.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from drivers.native import load_json
from gateway.errors import PayloadError
from gateway.models import Event, Family, Kind, Location
from gateway.site.config import Household, SiteConfig

CHECKIN_DEVICE = "visits"


def household_location(h: Household) -> Location:
    return Location(h.building, h.unit, h.number or h.id)


def checkin_topic(config: SiteConfig) -> str:
    return f"{config.topic_prefix}/visits/checkin"


def visit_event(
    config: SiteConfig, household: str, visitor: str, at: float, received_at: float, note: str, method: str
) -> Event:
    """A check-in as an event; ``ValueError`` names what is wrong."""
    houses = {h.id: h for h in config.households}
    if household not in houses:
        raise ValueError(f"unknown household {household!r}")
    if visitor not in {v.id for v in config.visitors}:
        raise ValueError(f"unknown visitor {visitor!r} (register it under [[visitors]])")
    return Event(
        device_id=CHECKIN_DEVICE,
        family=Family.DOOR,
        kind=Kind.VISIT,
        event_time=at,
        received_at=received_at,
        location=household_location(houses[household]),
        values={"household": household, "visitor": visitor, "note": note, "method": method},
        source=method,
    )


def decode_checkin(config: SiteConfig, payload: bytes, received_at: float) -> Event:
    """``{"household": "3-2-502", "visitor": "v1", "time"?: epoch s | ISO 8601, "note"?: str}``."""
    data = load_json(payload, "visit check-in")  # size, UTF-8, strict JSON, no absurd nesting
    if not isinstance(data, dict):
        raise PayloadError("wrong_type", "visit check-in: expected a JSON object")
    household, visitor, note = data.get("household"), data.get("visitor"), data.get("note", "")
    if not isinstance(household, str) or not isinstance(visitor, str):
        raise PayloadError("missing_field", "visit check-in: household and visitor (strings) are required")
    if not isinstance(note, str):
        raise PayloadError("wrong_type", "visit check-in: note must be a string")
    at = _time(data.get("time"), received_at)
    try:
        return visit_event(config, household, visitor, at, received_at, note[:500], "mqtt")
    except ValueError as exc:
        raise PayloadError("unknown_reference", f"visit check-in: {exc}") from None


def _time(value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed.timestamp()
    raise PayloadError("wrong_type", "visit check-in: time must be epoch seconds or ISO 8601 with a UTC offset")
