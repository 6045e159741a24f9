"""`sensegate status`: what an installer sees of a gateway's store; `sensegate alerts ack /
resolve` refusing, before anything is queued, a person the site config does not name."""

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


def _site_with_an_sos(tmp_path: Path) -> tuple[Path, str]:
    """A site file with staff, a visitor and a family contact, and a store with an open SOS alert."""
    site = minimal_site()
    site["gateway"]["data_dir"] = "data"
    site["staff"] = [{"id": "s-li", "name": "李值班", "role": "property"}]
    site["visitors"] = [{"id": "v-zhang", "name": "张社工", "role": "community_worker", "households": ["1-1-101"]}]
    site["residents"][0]["contacts"] = [{"name": "王小明", "phone": "13800000003", "relation": "儿子"}]
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site))
    config = load_config(path)
    store = Store(config.store_path)
    stored = store.append([event(Kind.SOS_PRESSED, Family.SOS, device="101-sos")], {})
    AlertPath(Registry(config), store, VirtualClock(), config.topic_prefix, site_rules(config)).process(stored)
    (alert,) = store.alerts(open_only=True)
    store.close()
    return path, alert.id


def _queued(path: Path) -> list[dict[str, object]]:
    store = Store(load_config(path).store_path)
    try:
        return [c.body for c in store.commands(pending_only=False)]
    finally:
        store.close()


def test_alerts_ack_refuses_an_unknown_person_before_queueing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, alert_id = _site_with_an_sos(tmp_path)
    for action, by, expected in (
        ("ack", "s-lii", "error: unknown person 's-lii'; did you mean 's-li'?"),
        ("ack", "李值班", "error: unknown person '李值班'; did you mean 's-li'?"),  # the name, not the id
        ("ack", "contact:r1:1", "did you mean 'contact:r1:0'?"),  # 王秀英 has one contact: number 0
        ("resolve", "nobody-here", "error: unknown person 'nobody-here': name a staff id, a visitor id"),
    ):
        assert cli(["alerts", action, "-c", str(path), alert_id, "--by", by, "--wait", "0"]) == 1
        assert expected in capsys.readouterr().err
    assert _queued(path) == []


@pytest.mark.parametrize("by", ["s-li", "v-zhang", "contact:r1:0"])
def test_alerts_ack_queues_an_ack_by_staff_a_visitor_or_a_family_contact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], by: str
) -> None:
    path, alert_id = _site_with_an_sos(tmp_path)
    # No gateway runs here: queued, for it to apply when it does.
    assert cli(["alerts", "ack", "-c", str(path), alert_id, "--by", by, "--wait", "0"]) == 3
    assert "queued" in capsys.readouterr().out
    assert [c["by"] for c in _queued(path)] == [by]
