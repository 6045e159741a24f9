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
