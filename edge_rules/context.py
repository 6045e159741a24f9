"""What the engine needs to know about the site: devices, where they are, who lives there.

The runtime builds a ``Context`` from its registry (see edge_rules/README.md, "The seam");
edge_rules never imports the registry or the site config, so it can be tested alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from gateway.models import Family, Location

RiskTier = Literal["high", "medium", "low"]
TIER_ORDER: Mapping[str, int] = {"low": 0, "medium": 1, "high": 2}


@dataclass(frozen=True, slots=True)
class ResidentInfo:
    """A resident as the rules see them. ``thresholds`` are the resident's own durations by the
    name a rule declares as ``resident_threshold`` (seconds), e.g. ``(("no_activity", 21600.0),)``;
    they win over the risk tier's (edge_rules/README.md, "Per-resident thresholds")."""

    id: str
    name: str = ""
    lives_alone: bool = False
    risk_tier: RiskTier = "low"
    thresholds: tuple[tuple[str, float], ...] = ()

    def threshold(self, name: str) -> float | None:
        return next((v for k, v in self.thresholds if k == name), None)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One device. ``household`` is the household id ("3-2-502"), empty in public areas;
    ``location`` is what people read (building, unit, door number, room).
    ``report_interval`` is how often the device is expected to report (seconds), for supervision."""

    id: str
    family: Family | None = None
    household: str = ""
    building: str = ""
    location: Location = field(default_factory=Location)
    residents: tuple[ResidentInfo, ...] = ()
    report_interval: float | None = None


class Context:
    """The devices of a site, by id. Immutable once built: the engine keeps what it works out
    per device (subjects, durations, the rules it can trigger) for the engine's whole life."""

    def __init__(self, devices: Iterable[DeviceInfo] = ()) -> None:
        self.devices: Mapping[str, DeviceInfo] = MappingProxyType({d.id: d for d in devices})

    def device(self, device_id: str) -> DeviceInfo | None:
        return self.devices.get(device_id)

    def sorted_devices(self) -> list[DeviceInfo]:
        return [self.devices[k] for k in sorted(self.devices)]
