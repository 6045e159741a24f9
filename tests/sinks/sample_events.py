"""Events for the sink tests: one realistic event per family, and a builder for the rest."""

from __future__ import annotations

from typing import Any

from gateway.models import Event, Family, Kind, Location, Scalar

Z2M = "zigbee2mqtt"
T0 = 1_717_000_000.123  # 2024-05-29T16:26:40.123Z

FLAT_502 = Location(building="3", unit="2", household="502", room="卫生间")


def event(
    family: Family = Family.DOOR,
    kind: Kind = Kind.DOOR_OPENED,
    *,
    seq: int = 1,
    event_time: float = T0,
    device_id: str = "door-3-2-502",
    values: dict[str, Scalar] | None = None,
    **kwargs: Any,
) -> Event:
    kwargs.setdefault("received_at", event_time + 0.25)
    kwargs.setdefault("location", FLAT_502)
    kwargs.setdefault("source", Z2M)
    kwargs.setdefault("model", "MCCGQ11LM")
    return Event(
        device_id=device_id,
        family=family,
        kind=kind,
        event_time=event_time,
        values=values or {},
        seq=seq,
        **kwargs,
    )


def one_per_family(start_seq: int = 1, t0: float = T0) -> list[Event]:
    """Seven events, one per family, each with the values its drivers really send."""
    rows: list[tuple[Family, Kind, str, str, dict[str, Scalar]]] = [
        (Family.DOOR, Kind.ACCESS_GRANTED, "reader-3-2", "native", {"credential": "A1B2", "method": "card"}),
        (Family.FALL, Kind.FALL_DETECTED, "radar-502-bath", "native", {"present": True, "distance": 1.25}),
        (Family.SMOKE, Kind.SMOKE_ALARM, "smoke-502-kitchen", Z2M, {"battery": 100, "smoke": True}),
        (Family.SOS, Kind.SOS_PRESSED, "sos-502-bed", "rtl_433", {"battery": 96.5, "linkquality": 87}),
        (Family.GAS, Kind.GAS_ALARM, "gas-502-kitchen", Z2M, {"concentration": 12, "gas": True}),
        (Family.WATER, Kind.WATER_LEAK, "water-502-bath", Z2M, {"water_leak": True, "voltage": 3005}),
        (Family.PRESENCE, Kind.PRESENCE, "pir-502-hall", Z2M, {"present": False, "direction": "in"}),
    ]
    return [
        event(
            family,
            kind,
            seq=start_seq + i,
            event_time=t0 + i * 0.001,
            device_id=device,
            source=source,
            model="",
            values=values,
        )
        for i, (family, kind, device, source, values) in enumerate(rows)
    ]
