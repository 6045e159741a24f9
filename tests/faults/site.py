"""The site the fault tests run: native devices, one household per alarm button (so every alarm
raises exactly one alert of its own), a few telemetry devices, and every message's unique id in
its payload (``values.uid``), which ends up as a field in InfluxDB. Each site has its own gateway
id (its MQTT session) and topic base, so tests sharing a broker do not hear each other."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def alarm_device(i: int) -> str:
    return f"sos-{i:03d}"


def telemetry_device(i: int) -> str:
    return f"door-{i:02d}"


def household(i: int) -> str:
    return f"1-1-{100 + i}"


def heartbeat(uid: str) -> str:
    return json.dumps({"kind": "heartbeat", "values": {"uid": uid}})


def sos(uid: str) -> str:
    return json.dumps({"kind": "sos_pressed", "values": {"uid": uid}})


def influx_output(url: str, database: str, **settings: Any) -> dict[str, Any]:
    """The sites' InfluxDB 1.x output, ``influx``: its database made by the gateway, flushed
    every 0.2 s (``settings`` add to it or change it)."""
    return {
        "type": "influxdb_v1",
        "name": "influx",
        "url": url,
        "database": database,
        "create_database": True,
        "flush_interval": 0.2,
        **settings,
    }


@dataclass(frozen=True)
class FaultSite:
    alarms: int
    telemetry: int = 4
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def base(self) -> str:
        return f"faults/{self.tag}"

    def topic(self, device: str) -> str:
        return f"{self.base}/{device}"

    def config(
        self,
        data_dir: Path,
        host: str,
        port: int,
        *,
        outputs: list[dict[str, Any]] | None = None,
        store: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        n = self.alarms
        return {
            "gateway": {"id": f"gw-{self.tag}", "site": "故障测试小区", "data_dir": str(data_dir)},
            "mqtt": {"host": host, "port": port, "native_base": self.base, "keepalive": 5},
            "store": {"synchronous": "full", **(store or {})},
            "alerts": {"console": False},
            "rules": {"packs": ["smart_community"]},
            "buildings": [{"id": "1", "name": "1号楼", "units": ["1"]}],
            "households": [
                {"id": household(i), "building": "1", "unit": "1", "number": str(100 + i)} for i in range(n)
            ],
            "devices": [
                {
                    "id": alarm_device(i),
                    "family": "sos",
                    "model": "native-sos",
                    "household": household(i),
                    "room": "卧室",
                    "mqtt": {"format": "native"},
                }
                for i in range(n)
            ]
            + [
                {
                    "id": telemetry_device(i),
                    "family": "door",
                    "model": "native-door",
                    "building": "1",
                    "room": f"{i}号门",
                    "mqtt": {"format": "native"},
                }
                for i in range(self.telemetry)
            ],
            "outputs": outputs or [],
        }
