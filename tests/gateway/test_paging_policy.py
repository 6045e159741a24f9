"""The paging policy (docs/alerts.md): no cap, quiet window or summary ever holds an alarm from
the person on duty; caps apply to maintenance and informational pages only, and what they hold
is ``held`` in the audit trail, never ``paged``. Alarms come from real zigbee2mqtt payloads
through the registry, on a virtual clock, with channel twins that record what they sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.models import Event
from gateway.site.config import parse_config
from tests.gateway.test_notify import MON_9, Rig, settle

BUILDINGS = 20


def block(**notify: Any) -> dict[str, Any]:
    """20 buildings, three households each; every household has an SOS button, the first of each
    building a smoke detector. One person on duty, a manager above, a maintenance technician."""
    households, devices = [], []
    for b in range(1, BUILDINGS + 1):
        for n in (101, 102, 103):
            hid = f"{b}-1-{n}"
            households.append({"id": hid, "building": str(b), "unit": "1", "number": str(n)})
            devices.append(sos(hid))
        devices.append(
            {
                "id": f"{b}-1-101-smoke",
                "family": "smoke",
                "model": "HS1SA",
                "household": f"{b}-1-101",
                "room": "厨房",
                "mqtt": {"format": "zigbee2mqtt", "friendly_name": f"{b}/101/smoke"},
            }
        )
    return {
        "gateway": {"id": "gw-test", "site": "测试小区"},
        "buildings": [{"id": str(b), "name": f"{b}号楼", "units": ["1"]} for b in range(1, BUILDINGS + 1)],
        "households": households,
        "devices": devices,
        "staff": [
            {"id": "duty", "name": "李值班", "role": "property", "phone": "+8613800000011"},
            {"id": "boss", "name": "孙经理", "role": "manager", "phone": "+8613800000014"},
            {"id": "fix", "name": "周师傅", "role": "maintenance", "phone": "+8613800000015"},
        ],
        "channels": [{"type": "mqtt", "id": "robot"}],
        "roster": [{"person": "duty"}],
        "ladders": [
            {
                "id": "emergency",
                "tiers": [
                    {"to": ["on_duty"], "channels": ["robot"]},
                    {"after": "2m", "to": ["role:manager"], "channels": ["robot"]},
                ],
            },
            {
                "id": "tickets",
                "repeat": "once",
                "tiers": [{"to": ["on_duty", "role:maintenance"], "channels": ["robot"]}],
            },
        ],
        "routes": [{"severity": [1, 2], "ladder": "emergency"}, {"severity": [3, 4], "ladder": "tickets"}],
        "notify": notify,
    }


def sos(household: str) -> dict[str, Any]:
    b, _, n = household.split("-")
    return {
        "id": f"{household}-sos",
        "family": "sos",
        "model": "TS0215A_sos",
        "household": household,
        "room": "卧室",
        "mqtt": {"format": "zigbee2mqtt", "friendly_name": f"{b}/{n}/sos"},
    }


class Block(Rig):
    def publish(self, friendly_name: str, payload: dict[str, Any]) -> list[Event]:
        """A zigbee2mqtt message, decoded by the real codec and registry, then stored."""
        now = self.clock.now()
        events = self.registry.decode(f"zigbee2mqtt/{friendly_name}", json.dumps(payload).encode(), now)
        self.alerts.process(self.store.append(events, {}))
        return events

    def pages_to(self, person: str) -> list[tuple[float, Any]]:
        """(when sent, note) for every page the person got, in order."""
        sent = {n.key: n.due_at for n in self.store.notifications() if n.state == "sent"}
        return [
            (sent.get(n.key, 0.0), n)
            for n in self.twins["robot"].sent
            if n.kind in ("raised", "escalated", "grouped") and person in {r.id for r in n.recipients}
        ]

    def alert_ids_in(self, notes: list[Any]) -> set[str]:
        ids: set[str] = set()
        for n in notes:
            ids.update(a["id"] for a in n.alert["alerts"]) if n.kind == "grouped" else ids.add(n.alert_id)
        return ids


def make(tmp_path: Path, **notify: Any) -> Block:
    return Block(tmp_path, parse_config(block(**notify), environ={}), MON_9)


async def test_sixty_sos_pages_then_twenty_smoke_alarms_every_smoke_alarm_reaches_the_person_on_duty(
    tmp_path: Path,
) -> None:
    r = make(tmp_path)  # the default cap_per_hour (12): five times over by the SOS pages alone
    async with r.running():
        # 60 SOS presses in an hour's first 40 minutes, each acknowledged and resolved by the
        # person on duty: 60 pages, 60 acknowledgement notices and 60 resolution notices.
        for b in range(1, BUILDINGS + 1):
            for n in (101, 102, 103):
                r.publish(f"{b}/{n}/sos", {"action": "emergency", "battery": 95, "linkquality": 120})
                await r.advance(20)
                (alert,) = r.store.alerts(open_only=True)
                r.alerts.acknowledge(alert.id, "duty", "cli")
                r.alerts.resolve(alert.id, "duty", "cli", note="误按，已上门确认")
                await r.advance(20)
        assert len(r.pages_to("duty")) == 60
        # Then a smoke alarm in each of 20 buildings, 30 s apart.
        smoke_at: dict[str, float] = {}
        for b in range(1, BUILDINGS + 1):
            (event,) = [
                e for e in r.publish(f"{b}/101/smoke", {"smoke": True, "battery": 90}) if e.kind == "smoke_alarm"
            ]
            await r.advance(10)
            (alert,) = [a for a in r.store.alerts(open_only=True) if a.device_id == event.device_id]
            smoke_at[alert.id] = r.clock.now() - 10
            await r.advance(20)
    assert r.clock.now() - MON_9 < 3600  # all within the hour
    got = {t: n for t, n in r.pages_to("duty") if n.alert_id in smoke_at}
    assert {n.alert_id for n in got.values()} == set(smoke_at)  # every smoke alarm, none held
    for t, note in got.items():
        assert t - smoke_at[note.alert_id] <= 5  # within seconds
        assert note.kind == "raised" and "李值班" not in note.text  # a page, not a summary
    assert not [n for n in r.twins["robot"].sent if n.kind == "summary"]
    for alert_id in smoke_at:
        log = r.store.alert_log(alert_id)
        # Nothing capped; at most grouped (seconds) with other alarms to the manager the storm reached.
        assert all(
            row.detail["why"] == "grouped" and "duty" not in row.detail["to"] for row in log if row.action == "held"
        )
        (paged,) = [row for row in log if row.action == "paged" and row.detail["tier"] == 0]
        assert paged.detail["to"] == ["duty"]


async def test_acknowledgement_notices_and_alarms_use_no_budget_maintenance_tickets_are_capped_and_held(
    tmp_path: Path,
) -> None:
    r = make(tmp_path, cap_per_hour=3)
    async with r.running():
        for n in (101, 102, 103, 101, 102):  # five alarms with their ack and resolution notices
            r.publish(f"1/{n}/sos", {"action": "emergency"})
            await r.advance(10)
            (alert,) = r.store.alerts(open_only=True)
            r.alerts.acknowledge(alert.id, "duty", "cli")
            r.alerts.resolve(alert.id, "duty", "cli")
            await r.advance(300)
        assert len(r.pages_to("duty")) == 5
        # Maintenance tickets (四级, battery low) in five buildings: the budget of three is whole.
        for b in range(1, 6):
            r.publish(f"{b}/101/smoke", {"smoke": False, "battery": 5, "battery_low": True})
            await r.advance(10)
    tickets = [a for a in r.store.alerts(open_only=True) if a.rule == "battery_low"]
    assert len(tickets) == 5
    paged = [n.alert_id for _, n in r.pages_to("fix")]
    assert paged == [a.id for a in sorted(tickets, key=lambda a: a.raised_at)][:3]
    for held in sorted(tickets, key=lambda a: a.raised_at)[3:]:
        log = r.store.alert_log(held.id)
        assert "paged" not in [row.action for row in log]  # held means held, never "paged"
        rows = [row for row in log if row.action == "held"]
        assert {row.detail["why"] for row in rows} == {"cap_per_hour"}
        assert {tuple(row.detail["to"]) for row in rows} == {("duty",), ("fix",)}
        assert all(row.detail["until"] > r.clock.now() for row in rows)
    summaries = r.store.notifications()
    assert any(n.body["kind"] == "summary" and n.state == "pending" for n in summaries)


async def test_a_storm_reaches_the_person_on_duty_grouped_within_the_window_and_pages_the_next_tier(
    tmp_path: Path,
) -> None:
    r = make(tmp_path)  # group_window 5 s, storm_open_alarms 5
    async with r.running():
        pressed: dict[str, float] = {}
        for b in range(1, 9):  # eight households press SOS within two seconds (a fire in the block)
            r.publish(f"{b}/101/sos", {"action": "emergency"})
            await r.advance(0.25, step=0.25)
        for a in r.store.alerts(open_only=True):
            pressed[a.id] = a.raised_at
        assert len(pressed) == 8
        await r.advance(5, step=0.5)
        pages = r.pages_to("duty")
        # Every alarm reached the person on duty, none later than the group window …
        assert r.alert_ids_in([n for _, n in pages]) == set(pressed)
        for t, note in pages:
            for aid in r.alert_ids_in([note]):
                assert t - pressed[aid] <= 5.0
        # … in fewer messages than alarms: the storm reads as a list of households.
        assert len(pages) < 8 and any(n.kind == "grouped" for _, n in pages)
        grouped = next(n for _, n in pages if n.kind == "grouped")
        assert "条报警同时发生" in grouped.title and all(aid in grouped.text for aid in r.alert_ids_in([grouped]))
        # More than five open alarms is more than one person can handle: the manager is paged
        # at once for the alarms beyond five, not after the ladder's two minutes.
        boss = r.alert_ids_in([n for _, n in r.pages_to("boss")])
        by_time = sorted(pressed, key=lambda k: pressed[k])
        assert boss == set(by_time[5:])
        assert all("storm" in [row.action for row in r.store.alert_log(aid)] for aid in by_time[5:])
    held = [row for aid in pressed for row in r.store.alert_log(aid) if row.action == "held"]
    assert held and {row.detail["why"] for row in held} == {"grouped"}
    assert all(row.detail["until"] - row.at <= 5.0 for row in held)


async def test_an_alarm_in_a_quiet_window_is_not_delayed(tmp_path: Path) -> None:
    site = block()
    site["ladders"][0]["quiet"] = {"start": "00:00", "end": "23:59"}  # a quiet window that would hold all
    r = Block(tmp_path, parse_config(site, environ={}), MON_9)
    async with r.running():
        r.publish("3/101/smoke", {"smoke": True})
        await settle()
        await r.advance(1, step=1)
    ((t, note),) = r.pages_to("duty")
    assert t - MON_9 <= 1 and note.kind == "raised"
