"""One-tap links (一键确认): a link taken from what the WeCom robot endpoint really received
(tests/receivers.py) opens the alert and acknowledges it in the paged person's name with no
password; it fails once expired (virtual clock) or moved to another alert; a link scanner's GET
acts on nothing; the audit trail names the person, via "link"."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.alerts.channels.wecom import WeComChannel
from gateway.alerts.links import KEY_META
from gateway.alerts.notify import Notifier
from gateway.alerts.path import AlertPath, Transition
from gateway.clock import VirtualClock
from gateway.models import Alert, Family, Kind
from gateway.site.alerting import WeComChannelSettings
from gateway.site.config import SiteConfig, parse_config, site_rules
from gateway.site.registry import Registry
from gateway.store import Store
from gateway.web.console import Changes, Console
from tests.gateway.factories import event
from tests.receivers import Receiver
from tests.web.helpers import two_buildings

PUBLIC = "https://desk.test:8480"
LINK = re.compile(r"\[点此确认\]\((https://desk\.test:8480(/ack/[0-9a-f]+/[A-Za-z0-9_-]+))\)")
DAY = 24 * 3600.0


def site(rx: Receiver, to: list[str], **console: Any) -> dict[str, Any]:
    s = two_buildings()
    s["staff"][0]["phone"] = "+8613800000011"  # s-li, 1号楼
    s["staff"][1]["phone"] = "+8613800000012"  # s-wang, 2号楼
    s["visitors"][0]["phone"] = "+8613800000021"  # v-zhang, visits 1-1-101
    s["console"] = {"enabled": True, "public_url": PUBLIC, **console}
    s["channels"] = [{"type": "wecom", "id": "wecom", "url": rx.wecom_url, "token": "env:WECOM_KEY"}]
    s["ladders"] = [{"id": "now", "tiers": [{"to": to, "channels": ["wecom"]}]}]
    s["routes"] = [{"ladder": "now"}]
    return s


@dataclass
class Rig:
    rx: Receiver
    config: SiteConfig
    clock: VirtualClock
    store: Store
    alerts: AlertPath
    notifier: Notifier
    console: Console

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.console.asgi, client=("10.0.0.9", 50000))
        return httpx.AsyncClient(transport=transport, base_url="https://desk.test:8480")

    def sos(self, device: str = "101-sos") -> Alert:
        stored = self.store.append([event(Kind.SOS_PRESSED, Family.SOS, device=device, t=self.clock.now())], {})
        (t,) = [t for t in self.alerts.process(stored) if t.kind == "raised"]
        return t.alert

    async def delivered_link(self, alert: Alert) -> tuple[str, str]:
        """(full URL, path) of the one-tap link in the WeCom markdown about ``alert``, as received."""
        task = asyncio.create_task(self.notifier.run_channel("wecom"))
        try:
            for _ in range(400):
                if not any(r.action == "delivered" for r in self.store.alert_log(alert.id)):
                    await asyncio.sleep(0.01)  # the markdown, then the @mention, then the store's "sent"
                    continue
                for d in self.rx.deliveries("wecom"):
                    content = d.body.get("markdown", {}).get("content", "") if d.msgtype == "markdown" else ""
                    if alert.id in content and (found := LINK.search(content)):
                        return found.group(1), found.group(2)
                await asyncio.sleep(0.01)
            raise AssertionError(f"no WeCom markdown with a link for {alert.id}: {self.rx.deliveries('wecom')}")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def acts(self, alert_id: str) -> list[tuple[str, str, str]]:
        return [(r.action, r.actor, r.channel) for r in self.store.alert_log(alert_id) if r.action == "acknowledged"]


@pytest.fixture
def rx() -> AsyncIterator[Receiver]:
    with Receiver() as receiver:
        yield receiver  # type: ignore[misc]


def rig(tmp_path: Path, rx: Receiver, to: list[str], **console: Any) -> Rig:
    s = site(rx, to, **console)
    s["gateway"] = {**s["gateway"], "data_dir": str(tmp_path / "data")}
    config = parse_config(s, file="<test>", environ={"WECOM_KEY": rx.wecom_key})
    store = Store(config.store_path)
    clock = VirtualClock()
    rules = site_rules(config)
    holder: list[Notifier] = []

    def on(t: Transition) -> None:
        holder[0].on_transition(t)

    alerts = AlertPath(Registry(config), store, clock, config.topic_prefix, rules, notify=on)
    settings = WeComChannelSettings.model_validate(
        {"type": "wecom", "id": "wecom", "url": rx.wecom_url, "token": rx.wecom_key, "timeout": 2.0}
    )
    notifier = Notifier(config, store, clock, alerts, {"wecom": WeComChannel(settings, clock)})
    holder.append(notifier)
    console = Console(config, store, clock, alerts, notifier, Changes(), timezone=rules.settings.timezone)
    return Rig(rx, config, clock, store, alerts, notifier, console)


async def test_a_link_from_a_wecom_message_acknowledges_without_a_password(tmp_path: Path, rx: Receiver) -> None:
    r = rig(tmp_path, rx, ["s-li"])
    alert = r.sos()
    url, path = await r.delivered_link(alert)
    assert url.startswith(PUBLIC + "/ack/" + alert.id + "/")
    async with r.client() as client:
        # Chat apps fetch a link to preview it: the GET shows the alert and one button, and acts on nothing.
        for _ in range(2):
            page = await client.get(path)
            assert page.status_code == 200 and "set-cookie" not in page.headers
            assert alert.message_zh in page.text and "以 李值班 的身份确认这条报警" in page.text
            assert f'<form class="tap" method="post" action="{path}">' in page.text
        assert (await client.head(path)).status_code in (200, 405)
        assert r.store.alert(alert.id).acked_at is None  # type: ignore[union-attr]
        assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "same-origin"
        # One tap: a POST with nothing but the signed URL — no session, no password, no CSRF field.
        done = await client.post(path)
        assert done.status_code == 303 and done.headers["location"] == f"{path}?notice=done"
        acked = r.store.alert(alert.id)
        assert acked is not None and acked.acked_by == "s-li" and acked.acked_via == "link"
        assert r.acts(alert.id) == [("acknowledged", "s-li", "link")]
        after = await client.get(done.headers["location"])
        assert "已确认，升级已停止" in after.text and 'class="tap"' not in after.text
        # Reused after the acknowledgement: shows who took it, does not act twice.
        again = await client.post(path)
        assert again.headers["location"] == f"{path}?notice=already"
        page = await client.get(path)
        assert "这条报警已由 李值班 于" in page.text and 'class="tap"' not in page.text
        assert r.acts(alert.id) == [("acknowledged", "s-li", "link")]
    # The audit trail names the person, on the signed-in console too.
    trail = [(x.action, x.actor, x.channel) for x in r.store.alert_log(alert.id)]
    assert ("acknowledged", "s-li", "link") in trail
    assert r.console.reader.actor_name("s-li") == "李值班 (s-li)"


async def test_a_link_fails_once_expired(tmp_path: Path, rx: Receiver) -> None:
    r = rig(tmp_path, rx, ["s-li"])
    alert = r.sos()
    _, path = await r.delivered_link(alert)
    async with r.client() as client:
        await r.clock.advance(DAY - 60)
        assert (await client.get(path)).status_code == 200  # 23 h 59 min: still good
        await r.clock.advance(61)
        page = await client.get(path)
        assert page.status_code == 410 and "链接已过期（有效期 24 小时）" in page.text
        assert f'href="/login?next=/alerts/{alert.id}"' in page.text
        assert (await client.post(path)).status_code == 410
    assert r.store.alert(alert.id).acked_at is None  # type: ignore[union-attr]
    assert r.acts(alert.id) == [] and r.store.counters()["console.link.expired"] == 2


async def test_the_validity_is_configurable(tmp_path: Path, rx: Receiver) -> None:
    r = rig(tmp_path, rx, ["s-li"], link_hours=2)
    alert = r.sos()
    _, path = await r.delivered_link(alert)
    await r.clock.advance(2 * 3600)
    async with r.client() as client:
        page = await client.get(path)
    assert page.status_code == 410 and "有效期 2 小时" in page.text


async def test_a_link_moved_to_another_alert_or_edited_fails(tmp_path: Path, rx: Receiver) -> None:
    r = rig(tmp_path, rx, ["s-li"])
    first = r.sos("101-sos")
    _, path = await r.delivered_link(first)
    other = r.sos("201-sos")
    token = path.rsplit("/", 1)[1]
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    async with r.client() as client:
        for bad in (
            f"/ack/{other.id}/{token}",  # another alert: the alert id is signed
            f"/ack/{first.id}/{flipped}",  # edited
            f"/ack/{first.id}/{token[:-4]}",  # cut short
            f"/ack/{first.id}/not-a-token!",
            f"/ack/{first.id[:6]}/{token}",  # a prefix of the id is not the id
        ):
            for method in ("GET", "POST"):
                page = await client.request(method, bad)
                assert page.status_code == 403, (method, bad, page.status_code)
                assert "链接无效" in page.text and token not in page.text
    assert r.acts(first.id) == [] and r.acts(other.id) == []
    assert r.store.counters()["console.link.bad"] == 10


async def test_a_group_link_asks_who_among_the_people_paged_each_bound_by_their_own_signature(
    tmp_path: Path, rx: Receiver
) -> None:
    r = rig(tmp_path, rx, ["s-li", "v-zhang"])
    alert = r.sos()
    _, path = await r.delivered_link(alert)
    (markdown,) = [d for d in rx.deliveries("wecom") if d.msgtype == "markdown"]
    assert len(LINK.findall(markdown.body["markdown"]["content"])) == 1  # one link in the group, not one per person
    (mention,) = [d for d in rx.deliveries("wecom") if d.msgtype == "text"]
    assert mention.body["text"]["mentioned_mobile_list"] == ["13800000011", "13800000021"]
    async with r.client() as client:
        page = await client.get(path)
        assert page.status_code == 200 and "您是哪一位" in page.text
        actions = re.findall(r'<form class="tap" method="post" action="([^"]+)">\s*<button[^>]*>([^<]+)<', page.text)
        assert [name for _, name in actions] == ["我是 李值班，确认", "我是 张社工，确认"]  # the paged ones only
        assert "王保安" not in page.text
        # The group link itself never acknowledges: it does not say who.
        chose = await client.post(path)
        assert chose.headers["location"] == f"{path}?notice=group" and r.acts(alert.id) == []
        # Each choice is that person's own signed link: it cannot be turned into someone else's.
        zhang = actions[1][0]
        assert (await client.post(zhang)).status_code == 303
    assert r.acts(alert.id) == [("acknowledged", "v-zhang", "link")]


async def test_without_a_public_url_there_is_no_link_and_the_hint_says_how(tmp_path: Path, rx: Receiver) -> None:
    r = rig(tmp_path, rx, ["s-li"], public_url="")
    alert = r.sos()
    task = asyncio.create_task(r.notifier.run_channel("wecom"))
    try:
        for _ in range(400):
            if rx.deliveries("wecom"):
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    content = rx.deliveries("wecom")[0].body["markdown"]["content"]
    assert alert.id in content and "请尽快处置，并告知值班室确认" in content and "/ack/" not in content
    assert r.store.meta(KEY_META) is None  # no link was made, so no key either
