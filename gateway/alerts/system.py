"""Alerts about the gateway itself rather than a household: its store's disk is full.

They are decisions like the rule engine's, saved by ``AlertPath.external`` and routed like every
alert: by severity, or by rule (``rules = ["gateway_*"]``), see docs/alerts.md.
"""

from __future__ import annotations

from edge_rules import Decision, Subject
from gateway.models import Severity
from gateway.store.disk import DiskState

DISK_RULE = "gateway_disk_full"
# Where the gateway keeps its disk's state for ``sensegate status`` (JSON: DiskState and "at").
DISK_META = "disk.state"
# 三级: alarms are still stored and paged; telemetry is thinned, then held back.
DISK_SEVERITY = Severity.SERIOUS


def disk_key(gateway_id: str) -> str:
    return f"{DISK_RULE}:{gateway_id}"


def disk_decision(state: DiskState, gateway_id: str, at: float) -> Decision:
    """Raise the alert when the disk is full (reword it when telemetry is refused, and back),
    resolve it once the disk has room."""
    subject = Subject("gateway", gateway_id)
    free = _size(state.free_bytes)
    if not state.full:
        return Decision(
            "resolve",
            DISK_RULE,
            disk_key(gateway_id),
            DISK_SEVERITY,
            at,
            f"【网关磁盘空间已恢复】网关 {gateway_id} 的存储磁盘已有空间（剩余{free}），数据照常接收",
            f"The disk of gateway {gateway_id} has room again ({free} free): all data is taken as usual",
            subject,
        )
    if state.refusing:
        zh = (
            f"【网关磁盘已满】网关 {gateway_id} 的存储磁盘已满（剩余{free}），已无可删除的数据：报警照常记录和通知，"
            f"遥测数据暂不接收（由MQTT代理暂存）。请立即清理磁盘空间，详情见 sensegate status"
        )
        en = (
            f"The disk of gateway {gateway_id} is full ({free} free) with nothing left to delete: alarms are "
            f"stored and paged as usual, telemetry is not taken (the broker holds it). Free disk space now; "
            f"details: sensegate status"
        )
    else:
        zh = (
            f"【网关磁盘已满】网关 {gateway_id} 的存储磁盘已满（剩余{free}）：报警照常记录和通知，"
            f"为腾出空间正在删除最早的遥测数据。请尽快清理磁盘空间，详情见 sensegate status"
        )
        en = (
            f"The disk of gateway {gateway_id} is full ({free} free): alarms are stored and paged as usual, "
            f"the oldest telemetry is deleted to make room. Free disk space soon; details: sensegate status"
        )
    # "update": raised if none is open, else reworded (full → refusing → full again): a "raise"
    # would open a second alert beside the first, and the third would count as flapping.
    return Decision("update", DISK_RULE, disk_key(gateway_id), DISK_SEVERITY, at, zh, en, subject)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
