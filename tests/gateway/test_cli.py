"""`sensegate status`: what an installer sees of a gateway's store."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w

from gateway.alerts.path import AlertPath
from gateway.cli.app import main as cli
from gateway.clock import VirtualClock
from gateway.models import Family, Kind
from gateway.site.config import load_config, site_rules
from gateway.site.registry import Registry
from gateway.store import Store
from tests.gateway.factories import event, minimal_site


def test_status_shows_counters_queues_and_open_alerts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = minimal_site(
        outputs=[{"type": "influxdb_v1", "name": "influx", "url": "http://127.0.0.1:1", "database": "x"}]
    )
    site["gateway"]["data_dir"] = "data"
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site))
    assert cli(["status", "-c", str(path)]) == 1
    assert "no store yet" in capsys.readouterr().out

    config = load_config(path)
    store = Store(config.store_path)
    stored = store.append(
        [event(), event(Kind.SOS_PRESSED, Family.SOS, device="101-sos")],
        {"influx": None},
        counts={"malformed.bad_json": 2},
    )
    AlertPath(Registry(config), store, VirtualClock(), config.topic_prefix, site_rules(config)).process(stored)
    store.close()

    assert cli(["status", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 events" in out
    assert "  accepted = 2" in out and "  malformed.bad_json = 2" in out
    assert "  pending.influx = 2" in out
    assert "[一级(特别重大)]" in out and "【紧急呼叫】" in out


def test_check_and_run_refuse_a_roster_time_alike(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What ``run`` would refuse at start-up, ``check`` refuses: exit 2, the field named, no traceback."""
    site = minimal_site(
        staff=[{"id": "s-li", "name": "李师傅", "role": "property"}],
        roster=[{"person": "s-li", "start": "25:00", "end": "08:00"}],
        channels=[{"type": "mqtt", "id": "app"}],
    )
    site["gateway"]["data_dir"] = "data"
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site))
    for command in ("check", "run"):
        assert cli([command, "-c", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("config error: 1 problem(s)\n"), err
        assert 'roster[0].start: expected a local time "HH:MM", e.g. "07:00", found \'25:00\'' in err
    assert not (tmp_path / "data").exists()  # run stopped before opening anything
