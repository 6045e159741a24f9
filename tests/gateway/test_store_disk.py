"""The store's disk (gateway/store/disk.py): the bound counts the WAL and holds on every write;
on a full filesystem the reserve is released, telemetry gives way and then is refused, alarms
are always stored; the reserve comes back with the room. The full-disk cases run on a small
tmpfs (root only: skipped with the reason otherwise)."""

from __future__ import annotations

import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import pytest

from gateway.errors import StoreFullError
from gateway.models import Family, Kind
from gateway.store import Store
from gateway.store.disk import default_reserve, wal_budget
from tests.faults.smallfs import fill, tmpfs
from tests.gateway.factories import event

MIB = 1024 * 1024
PAD = "x" * 400
INFLUX: dict[str, frozenset[str] | None] = {"influx": None}


def telemetry(n: int) -> list:  # type: ignore[type-arg]
    return [event(pad=PAD) for _ in range(n)]


def alarms(n: int) -> list:  # type: ignore[type-arg]
    return [event(Kind.SMOKE_ALARM, Family.SMOKE, pad=PAD) for _ in range(n)]


def integrity(path: Path) -> str:
    with closing(sqlite3.connect(path)) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def test_sizes_follow_the_bound_and_the_reserve() -> None:
    assert default_reserve(512 * MIB) == 8 * MIB and default_reserve(3 * MIB) == MIB
    assert wal_budget(512 * MIB, 8 * MIB) == 2 * MIB  # a quarter of the reserve
    assert wal_budget(3 * MIB, MIB) == 3 * MIB // 16
    assert wal_budget(100 * 1024, 0) == 64 * 1024  # never checkpoint every page


def test_the_reserve_is_the_gateways_not_a_cli_commands(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", reserve_bytes=MIB)
    reserve = tmp_path / "s.db.reserve"
    assert not reserve.exists()  # opening the store (sensegate status …) makes none
    state = store.manage_disk(lambda: 0)
    assert reserve.stat().st_size == MIB and stat.S_IMODE(reserve.stat().st_mode) == 0o600
    assert state.managed and not state.full and state.reserve_bytes == MIB


@pytest.mark.parametrize("delivered", [True, False], ids=["history", "undelivered"])
def test_a_3_mib_bound_holds_on_every_write_wal_included(tmp_path: Path, delivered: bool) -> None:
    """The issue's replay: a 3 MiB bound reached 23 MB between two 10 s housekeeping runs."""
    bound = 3 * MIB
    store = Store(tmp_path / "s.db", max_bytes=bound, reserve_bytes=MIB)
    store.manage_disk(lambda: 1 << 62)  # the alert path has seen everything
    outputs: dict[str, frozenset[str] | None] = {} if delivered else INFLUX
    kept_alarms = []
    peak = 0
    for _ in range(150):  # 15 000 events, about 15 MB as rows
        kept_alarms += store.append(alarms(1), outputs)
        store.append(telemetry(100), outputs)
        peak = max(peak, store.disk_bytes())
    assert peak <= bound, f"the store's files reached {peak} bytes"
    counters = store.counters()
    assert counters["pruned" if delivered else "dropped"] > 10_000
    left = {e.seq for e in store.events_after(0, limit=100_000)}
    assert {e.seq for e in kept_alarms} <= left or delivered  # undelivered alarms are never dropped
    assert integrity(store.path) == "ok"


def test_a_full_disk_thins_telemetry_then_refuses_it_and_always_stores_alarms(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", 4 * MIB) as fs:
        store = Store(fs / "s.db", max_bytes=64 * MIB, reserve_bytes=MIB)
        seen = [1 << 62]  # the alert path's cursor
        changes: list[str] = []
        store.manage_disk(lambda: seen[0], lambda: changes.append("change"))
        for _ in range(16):
            store.append(telemetry(50), INFLUX)  # undelivered: InfluxDB is away
        filler = fill(fs)

        # The next write finds the disk full: half the reserve goes, telemetry is thinned in the file.
        store.append(telemetry(50), INFLUX)
        state = store.disk_state()
        assert state.full and not state.refusing and changes
        assert state.reserve_bytes == MIB // 2
        for _ in range(40):
            store.append(telemetry(50), INFLUX)
            store.append(alarms(1), INFLUX)
        assert store.disk_state().full
        assert store.counters()["dropped"] >= 1500  # a ring buffer of telemetry in the file

        # Alarms take the place of the last telemetry; with nothing left to evict, telemetry is refused …
        stored_alarms = []
        while not store.refusing_telemetry and len(stored_alarms) < 2000:
            stored_alarms += store.append(alarms(10), INFLUX)
        assert store.refusing_telemetry and store.disk_state().refusing
        assert not any(e.lane.value == "telemetry" for e in store.events_after(0, limit=100_000))
        # … and alarms still go in, into the reserve's room, then the rest of it.
        for _ in range(150):
            stored_alarms += store.append(alarms(1), INFLUX)
        left = {e.seq for e in store.events_after(0, limit=100_000)}
        assert {e.seq for e in stored_alarms} <= left
        assert integrity(store.path) == "ok"

        # Room again: the reserve is refilled and telemetry is taken.
        filler.unlink()
        state = store.check_disk()
        assert not state.full and not state.refusing and state.reserve_bytes == MIB
        store.append(telemetry(10), INFLUX)
        store.close()


def test_a_commit_that_hits_enospc_is_rolled_back_and_goes_in_at_the_second_try(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", 6 * MIB) as fs:
        store = Store(fs / "s.db", max_bytes=64 * MIB, reserve_bytes=2 * MIB)
        store.manage_disk(lambda: 1 << 62)
        store.append(telemetry(200), INFLUX)
        # The checkpoint thread's copy done before the disk is filled: the WAL is written again
        # from its start, so the batch must be more than its file and the free space hold.
        store._checkpoint("PASSIVE")
        fill(fs, leave=store.wal_bytes + 8192)  # just above the mark: no shortage seen before the write
        big = alarms(2000)
        with pytest.raises(StoreFullError):
            store.append(big, INFLUX)
        assert store.disk_state().full  # the failure released half the reserve
        stored = store.append(big, INFLUX)  # what the ingest does: once more
        kept = [e for e in store.events_after(0, limit=10_000) if e.kind is Kind.SMOKE_ALARM]
        assert len(stored) == len(kept) == 2000  # once each (telemetry made way: dropped)
        assert integrity(store.path) == "ok"
        store.close()


def test_a_gateway_restarted_on_a_full_disk_opens_its_store_with_the_reserve(tmp_path: Path) -> None:
    """The last close removed the WAL and its shared memory; SQLite needs room to make them again."""
    with tmpfs(tmp_path / "fs", 4 * MIB) as fs:
        first = Store(fs / "s.db", max_bytes=64 * MIB, reserve_bytes=MIB)
        first.manage_disk(lambda: 1 << 62)
        first.append(telemetry(100), INFLUX)
        first.close()
        fill(fs)
        store = Store(fs / "s.db", max_bytes=64 * MIB, reserve_bytes=MIB)  # "disk I/O error" without it
        state = store.manage_disk(lambda: 1 << 62)
        assert state.full and state.reserve_bytes < MIB
        stored = store.append(alarms(20), INFLUX)
        assert len(stored) == 20
        assert integrity(store.path) == "ok"
        store.close()
