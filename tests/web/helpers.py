"""A duty desk in-process for tests: the console app on a store, an alert path and a notifier,
with a virtual clock, and an httpx client talking to it without a socket."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.alerts.notify import Notifier
from gateway.alerts.path import AlertPath
from gateway.clock import VirtualClock
from gateway.models import Alert, Family, Kind
from gateway.site.config import SiteConfig, parse_config, site_rules
from gateway.site.registry import Registry
from gateway.store import Store
from gateway.web.auth import hash_password
from gateway.web.console import Changes, Console
from tests.gateway.factories import event, minimal_site

PASSWORD = "correct horse battery"


def two_buildings() -> dict[str, Any]:
    """The minimal site and a second building with an SOS button, and people of every kind:
    duty staff for each building, an installer, a manager and a visitor of 101."""
    site = minimal_site()
    site["buildings"].append({"id": "2", "name": "2号楼", "units": ["1"]})
    site["households"].append({"id": "2-1-201", "building": "2", "unit": "1", "number": "201"})
    site["residents"].append({"id": "r2", "name": "李桂兰", "household": "2-1-201", "lives_alone": True})
    site["devices"].append(
        {
            "id": "201-sos",
            "family": "sos",
            "model": "TS0215A_sos",
            "household": "2-1-201",
            "room": "卧室",
            "mqtt": {"format": "zigbee2mqtt", "friendly_name": "2号楼/201/SOS"},
        }
    )
    site["staff"] = [
        {"id": "s-li", "name": "李值班", "role": "property", "buildings": ["1"]},
        {"id": "s-wang", "name": "王保安", "role": "security", "buildings": ["2"]},
        {"id": "s-fix", "name": "周师傅", "role": "maintenance"},
        {"id": "s-boss", "name": "孙经理", "role": "manager"},
    ]
    site["visitors"] = [{"id": "v-zhang", "name": "张社工", "role": "community_worker", "households": ["1-1-101"]}]
    site["console"] = {"enabled": True}
    return site


@dataclass
class Desk:
    config: SiteConfig
    store: Store
    clock: VirtualClock
    alerts: AlertPath
    console: Console

    def client(self, host: str = "127.0.0.1", https: bool = False) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.console.asgi, client=(host, 50000))
        base = "https://desk.test" if https else "http://desk.test"
        return httpx.AsyncClient(transport=transport, base_url=base)

    def raise_sos(self, device: str = "101-sos") -> Alert:
        stored = self.store.append([event(Kind.SOS_PRESSED, Family.SOS, device=device, t=self.clock.now())], {})
        (t,) = [t for t in self.alerts.process(stored) if t.kind == "raised"]
        return t.alert

    def set_password(self, person: str, password: str = PASSWORD) -> None:
        self.store.set_password_hash(person, hash_password(password), self.clock.now())


def desk(tmp_path: Path, site: dict[str, Any] | None = None) -> Desk:
    site = dict(site or two_buildings())
    site["gateway"] = {**site["gateway"], "data_dir": str(tmp_path / "data")}
    config = parse_config(site, file="<test>")
    store = Store(config.store_path)
    clock = VirtualClock()
    rules = site_rules(config)
    alerts = AlertPath(Registry(config), store, clock, config.topic_prefix, rules)
    notifier = Notifier(config, store, clock, alerts, {})
    console = Console(config, store, clock, alerts, notifier, Changes(), timezone=rules.settings.timezone)
    return Desk(config, store, clock, alerts, console)


def form_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, user: str, password: str = PASSWORD) -> httpx.Response:
    """Open the login page and post the form: the response to the post (303 when it worked)."""
    page = await client.get("/login")
    return await client.post(
        "/login", data={"user": user, "password": password, "csrf": form_token(page.text), "next": "/"}
    )
