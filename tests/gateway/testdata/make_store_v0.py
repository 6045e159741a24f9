"""How store-v0.sql was made: a store written by the release before schema versions (commit
2a83890, when the store was one module, gateway/store.py), dumped as SQL.

    git archive 2a83890 | tar -x -C /tmp/sg-2a83890
    PYTHONPATH=/tmp/sg-2a83890 python tests/gateway/testdata/make_store_v0.py tests/gateway/testdata/store-v0.sql

It is the record of what the fixture holds, not a test: it needs the old code on its path.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path

from gateway.models import Alert, AlertState, Event, Family, Kind, Location, Severity
from gateway.store import Store, VisitRow

T0 = 1_795_305_600.0  # 2026-11-22T16:00:00Z, the day 2a83890 was committed
LOC = Location(building="3", unit="2", household="3-2-502", room="入户门")


def main(out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.sqlite3"
        store = Store(path)
        door = Event("3-2-502-door", Family.DOOR, Kind.DOOR_OPENED, T0, T0, "MCCGQ11LM", LOC, {"contact": False})
        fall = Event("3-2-502-radar", Family.FALL, Kind.FALL_DETECTED, T0 + 60, T0 + 60, "MR60FDA1", LOC, {})
        (door, fall) = store.append([door, fall], {"influx": None}, [("k1", T0)], {"malformed.bad_json": 1}, now=T0)
        alert = Alert(
            id="a-0001",
            dedup_key="fall:3-2-502-radar",
            rule="fall_detected",
            severity=Severity.CRITICAL,
            state=AlertState.ACKNOWLEDGED,
            raised_at=T0 + 60,
            last_seen=T0 + 60,
            message_zh="3号楼2单元502 跌倒报警",
            message_en="Fall detected: building 3, unit 2, flat 502",
            location=LOC,
            device_id="3-2-502-radar",
            evidence=(fall.seq,),
            acked_by="s-day",
            acked_at=T0 + 120,
            acked_via="cli",
        )
        store.save_alerts([alert], [("mqtt", "sensegate/alerts/a-0001", "{}", True)], ("alerts", fall.seq), T0 + 120)
        checkin = Event("visit:3-2-502", Family.DOOR, Kind.VISIT, T0 + 3600, T0 + 3600, "", LOC, {"visitor": "v-li"})
        store.append_visit(checkin, VisitRow("3-2-502", ("r-wang",), "v-li", T0 + 3600, "cli", note="送饭"))
        store.set_meta("plan.r-wang", str(T0))
        store.close()
        db = sqlite3.connect(path)
        Path(out).write_text("\n".join(db.iterdump()) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
