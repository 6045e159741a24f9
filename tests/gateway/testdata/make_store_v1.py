"""How store-v1.sql was made: a store written by the release whose schema was version 1
(commit 4145940), dumped as SQL with its ``user_version`` (``iterdump`` leaves it out).

    git worktree add --detach /tmp/sg-4145940 4145940
    PYTHONPATH=/tmp/sg-4145940 python tests/gateway/testdata/make_store_v1.py tests/gateway/testdata/store-v1.sql

What version 2 changes is in it: events of three devices (``events_device_time``), the keys of
accepted MQTT messages (``recent_ingest`` with its UNIQUE key), one of them stored twice. It is
the record of what the fixture holds, not a test: it needs the old code on its path.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path

from gateway.models import Event, Family, Kind, Location
from gateway.store import Store

T0 = 1_796_601_600.0  # 2026-12-07T00:00:00Z, the day 4145940 was committed
LOC = Location(building="3", unit="2", household="3-2-502", room="入户门")


def main(out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.sqlite3"
        store = Store(path)
        assert store.schema_version() == 1
        door = Event("3-2-502-door", Family.DOOR, Kind.DOOR_OPENED, T0, T0, "MCCGQ11LM", LOC, {"contact": False})
        smoke = Event("3-2-502-smoke", Family.SMOKE, Kind.SMOKE_CLEAR, T0 + 30, T0 + 30, "JTYJ-GD-01LM/BW", LOC, {})
        closed = Event("3-2-502-door", Family.DOOR, Kind.DOOR_CLOSED, T0 + 60, T0 + 60, "MCCGQ11LM", LOC, {})
        sos = Event("3-2-502-sos", Family.SOS, Kind.BATTERY, T0 + 90, T0 + 90, "WXKG01LM", LOC, {"battery": 88})
        keys = [("k1", T0), ("k2", T0 + 30), ("k3", T0 + 60)]
        store.append([door, smoke], {"influx": None}, keys[:2], now=T0 + 30)
        store.append([closed, sos], {"influx": None}, [*keys[2:], ("k1", T0 + 90)], now=T0 + 90)
        store.close()
        db = sqlite3.connect(path)
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        dump = "\n".join(db.iterdump())
        Path(out).write_text(f"{dump}\nPRAGMA user_version = {version};\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
