"""A device's health as the console shows it, from its row in ``device_state`` and its config:
pure, no I/O. The thresholds follow the smart_community pack's supervision rules, so the page
and the maintenance tickets agree:

- **offline** (离线): the bridge said so (availability), until the device reports again;
- **silent** (长时间未上报): no report for longer than the ``device_silent`` rule waits — its
  ``interval_multiple`` × the device's ``report_interval``, or its ``duration`` (6 h) when the
  device has none; a device never heard from is silent too;
- **battery** (低电量): the device's flag, or under 20 % (cleared from 50 %: ``store/devices.py``);
- **weak** (信号弱): a Zigbee link quality (LQI, 0–255) under ``WEAK_LQI``;
- **tamper** (防拆报警) and **fault** (故障): as the device last said.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge_rules import RuleSet
from edge_rules.rules import AbsenceRule
from gateway.site.config import Device
from gateway.store import DeviceState

# zigbee2mqtt shows LQI without judging it; links under about 50 (of 255) are the ones that drop
# messages in practice, so that is where the console starts to say 信号弱.
WEAK_LQI = 50.0
SILENT_MULTIPLE = 3.0  # the device_silent rule's interval_multiple, if the rules have none
SILENT_DEFAULT = 6 * 3600.0  # and its duration
# Worst first: what a cell in the building grid shows when a device has several problems.
PROBLEMS = ("offline", "silent", "tamper", "fault", "battery", "weak")


@dataclass(frozen=True, slots=True)
class SilenceLimits:
    multiple: float = SILENT_MULTIPLE
    default: float = SILENT_DEFAULT

    @classmethod
    def from_rules(cls, rules: RuleSet | None) -> SilenceLimits:
        """The ``device_silent`` rule's limits when the site runs it, else the pack's defaults."""
        for rule in rules.rules if rules is not None else ():
            if rule.id == "device_silent" and isinstance(rule, AbsenceRule):
                return cls(rule.interval_multiple or SILENT_MULTIPLE, rule.duration or SILENT_DEFAULT)
        return cls()

    def limit(self, device: Device) -> float:
        if device.report_interval is not None:
            return self.multiple * device.report_interval
        return self.default


def problems(device: Device, state: DeviceState | None, now: float, limits: SilenceLimits) -> tuple[str, ...]:
    """The device's problems, worst first (``PROBLEMS`` order); empty when all is well."""
    found: set[str] = set()
    if state is not None and state.online is False:
        found.add("offline")
    if state is None or state.last_seen is None or now - state.last_seen > limits.limit(device):
        found.add("silent")
    if state is not None:
        if state.tamper:
            found.add("tamper")
        if state.fault:
            found.add("fault")
        if state.battery_low:
            found.add("battery")
        if state.link_quality is not None and state.link_quality < WEAK_LQI:
            found.add("weak")
    return tuple(p for p in PROBLEMS if p in found)


def worst(found: Iterable[str]) -> str:
    """The grid cell's class: the worst problem, or ``ok``."""
    return next(iter(found), "ok")
