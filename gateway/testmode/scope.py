"""What a test mode covers: the site, a building, a unit, a household or one device, resolved
against the registry to the devices it holds when it is set (docs/installer.md)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from gateway.site.checkin import household_location
from gateway.site.registry import DeviceEntry, Registry

SCOPES = ("site", "building", "unit", "household", "device")
SCOPE_ZH = {"site": "全小区", "building": "楼栋", "unit": "单元", "household": "住户", "device": "设备"}


@dataclass(frozen=True, slots=True)
class Scope:
    kind: str  # one of SCOPES
    target: str  # "" (site), "3", "3/2" (building/unit), "3-2-502", a device id
    label_zh: str  # 全小区, 3号楼, 3号楼2单元, 3号楼2单元502室, 3号楼2单元502室 厨房 烟感(3-2-502-smoke)
    label_en: str
    devices: tuple[str, ...]


def building_label(registry: Registry, building: str) -> str:
    names = {b.id: b.name for b in registry.config.buildings}
    return names.get(building) or f"{building}号楼"


def resolve(registry: Registry, kind: str, target: str = "") -> Scope:
    """The scope ``kind``/``target`` names; ``ValueError`` says what is wrong, with the closest
    names for a typo. A unit is ``<building>/<unit>``."""
    devices = list(registry.devices.values())
    if kind == "site":
        name = registry.config.gateway.site or "全小区"
        return Scope("site", "", name, "the whole site", _ids(devices))
    if not target:
        raise ValueError(f"a {kind} scope needs its id")
    if kind == "building":
        buildings = {b.id for b in registry.config.buildings} | {e.location.building for e in devices}
        buildings.discard("")
        _known(target, buildings, "building")
        found = [e for e in devices if e.location.building == target]
        return Scope("building", target, building_label(registry, target), f"building {target}", _ids(found))
    if kind == "unit":
        building, _, unit = target.partition("/")
        units = {f"{e.location.building}/{e.location.unit}" for e in devices if e.location.unit}
        _known(target, units, "unit (<building>/<unit>)")
        found = [e for e in devices if (e.location.building, e.location.unit) == (building, unit)]
        label = f"{building_label(registry, building)}{unit}单元"
        return Scope("unit", target, label, f"building {building}, unit {unit}", _ids(found))
    if kind == "household":
        house = registry.households.get(target)
        if house is None:
            _known(target, set(registry.households), "household")
        assert house is not None
        found = [e for e in devices if e.config.household == target]
        loc = household_location(house)
        return Scope("household", target, loc.label_zh(), loc.label_en(), _ids(found))
    if kind == "device":
        entry = registry.devices.get(target)
        if entry is None:
            _known(target, set(registry.devices), "device")
        assert entry is not None
        return Scope("device", target, device_label(entry), f"device {target}", (target,))
    raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {kind!r}")


def device_label(entry: DeviceEntry) -> str:
    """``3号楼2单元502室 厨房(3-2-502-smoke)``: where to walk to, and which one."""
    place = entry.location.label_zh() or entry.id
    return f"{place}({entry.id})"


def _ids(entries: list[DeviceEntry]) -> tuple[str, ...]:
    return tuple(sorted(e.id for e in entries))


def _known(target: str, known: set[str], what: str) -> None:
    if target in known:
        return
    close = difflib.get_close_matches(target, sorted(known), 3, 0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"no {what} {target!r} in the site{hint}")
