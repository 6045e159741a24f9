"""`sensegate backup` while the gateway runs (SQLite's online backup), `sensegate restore`
refused while it runs, refused for a damaged or newer backup, and done when it is stopped:
the data back, the replaced store kept beside it; one gateway per store."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
import tomli_w

from gateway.cli.app import main as cli
from gateway.errors import StoreError
from gateway.runtime import Gateway
from gateway.site.config import load_config
from gateway.store import Store
from gateway.store.schema import SCHEMA_VERSION
from tests.gateway.factories import event, minimal_site
from tests.gateway.harness import running
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration


def write_site(tmp_path: Path, broker: Mosquitto) -> Path:
    site = minimal_site()
    site["gateway"] = {**site["gateway"], "data_dir": str(tmp_path / "data")}
    site["mqtt"] = {"host": broker.host, "port": broker.port}
    site["alerts"] = {"console": False}
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site))
    return path


async def test_backup_while_running_restore_refused_until_stopped(
    mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_site(tmp_path, mosquitto)
    config = load_config(path)
    backup = tmp_path / "b" / "store-1.sqlite3"
    async with running(config) as gateway:
        gateway.store.append([event(t=1_795_305_600.0 + i) for i in range(50)], {})
        assert cli(["backup", "-c", str(path), "--to", str(backup)]) == 0
        assert "50 events" in capsys.readouterr().out
        gateway.store.append([event(t=1_795_400_000.0)], {})  # after the backup
        assert cli(["restore", str(backup), "-c", str(path)]) == 1
        err = capsys.readouterr().err
        assert "the gateway is running" in err and "stop it first" in err
        # A second gateway on the same store refuses to start.
        with pytest.raises(StoreError, match="in use"):
            await Gateway(config).run()
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert not Path(f"{backup}-wal").exists()  # noqa: ASYNC240 — one self-contained file
    db = sqlite3.connect(backup)
    assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 50
    db.close()

    assert cli(["restore", str(backup), "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "restored" in out and "50 events" in out
    kept = next(config.store_path.parent.glob("store.sqlite3.before-restore-*"))
    assert f"kept as {kept}" in out
    store = Store(config.store_path)
    assert store.event_count() == 50
    store.close()
    store = Store(kept)
    assert store.event_count() == 51  # the replaced store, whole without its WAL
    store.close()


def test_default_backup_file_and_nothing_to_back_up(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_site(tmp_path, mosquitto)
    assert cli(["backup", "-c", str(path)]) == 1
    assert "nothing to back up" in capsys.readouterr().err
    config = load_config(path)
    Store(config.store_path).close()
    assert cli(["backup", "-c", str(path)]) == 0
    (made,) = (config.store_path.parent / "backups").glob("store-*.sqlite3")
    assert str(made) in capsys.readouterr().out


def test_restore_refuses_a_damaged_or_newer_backup_and_touches_nothing(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_site(tmp_path, mosquitto)
    config = load_config(path)
    store = Store(config.store_path)
    store.append([event()], {})
    store.close()
    before = config.store_path.read_bytes()

    damaged = tmp_path / "damaged.sqlite3"
    Store(damaged).close()
    with damaged.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * 4096)
    assert cli(["restore", str(damaged), "-c", str(path)]) == 1
    assert "damaged" in capsys.readouterr().err

    (tmp_path / "notes.txt").write_text("not a database")
    assert cli(["restore", str(tmp_path / "notes.txt"), "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert "not a store" in err or "damaged" in err

    newer = tmp_path / "newer.sqlite3"
    Store(newer).close()
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    assert cli(["restore", str(newer), "-c", str(path)]) == 1
    assert "newer than this SenseGate" in capsys.readouterr().err

    assert config.store_path.read_bytes() == before
    assert not list(config.store_path.parent.glob("*.before-restore-*"))
