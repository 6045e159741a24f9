"""Acknowledge by SMS reply, through the modem simulator on a real pty: the page says "回复 1 <code>
确认"; an SMS-DELIVER from a known phone with that code acknowledges in that person's name
(via "sms") and gets an answer SMS; an unknown number or a wrong code does nothing; the SIM is
emptied as it is read. No network but the (simulated) GSM one."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from drivers.gsm_pdu import decode_deliver
from gateway.alerts.channels.sms import SmsChannel
from gateway.alerts.links import LinkSigner, store_key
from gateway.alerts.notify import Notifier
from gateway.alerts.path import AlertPath, Transition
from gateway.alerts.replies import ALPHABET, RESERVED_AFTER_CLOSE, ReplyCodes, SmsReplies, parse_reply, phone_key
from gateway.clock import VirtualClock
from gateway.errors import PayloadError
from gateway.models import Alert, AlertState, Family, Kind, Severity
from gateway.site.alerting import SmsSettings
from gateway.site.config import SiteConfig, parse_config, site_rules
from gateway.site.registry import Registry
from gateway.store import Store
from simulators.gsm_modem import PtyModem
from tests.gateway.factories import event, minimal_site

LI = "+8613800000011"  # s-li, property, on the ladder
WANG = "13800000012"  # s-wang, security, not paged (a national number in the config)
SON = "+8613800000001"  # contact:r1:0, the elder's son
STRANGER = "+8613999999999"
CODE = re.compile(r"回复 1 ([A-Z0-9]{4}) 确认")


def site(tmp_path: Path, *, replies: bool = True, **console: Any) -> dict[str, Any]:
    s = minimal_site()
    s["gateway"] = {**s["gateway"], "data_dir": str(tmp_path / "data")}
    s["residents"][0]["contacts"] = [{"name": "王小明", "phone": SON, "relation": "儿子"}]
    s["staff"] = [
        {"id": "s-li", "name": "李值班", "role": "property", "phone": "+86 138-0000-0011"},
        {"id": "s-wang", "name": "王保安", "role": "security", "phone": WANG},
    ]
    s["channels"] = [
        {
            "type": "sms",
            "id": "sms",
            "port": str(tmp_path / "ttyGSM"),
            "timeout": 0.5,
            "send_timeout": 0.5,
            "replies": replies,
        }
    ]
    s["ladders"] = [{"id": "now", "tiers": [{"to": ["family", "s-li"], "channels": ["sms"]}]}]
    s["routes"] = [{"ladder": "now"}]
    if console:
        s["console"] = {"enabled": True, **console}
    return s


@dataclass
class Rig:
    sim: PtyModem
    config: SiteConfig
    clock: VirtualClock
    store: Store
    alerts: AlertPath
    notifier: Notifier
    channel: SmsChannel
    replies: SmsReplies

    def sos(self) -> Alert:
        stored = self.store.append([event(Kind.SOS_PRESSED, Family.SOS, device="101-sos", t=self.clock.now())], {})
        (t,) = [t for t in self.alerts.process(stored) if t.kind == "raised"]
        return t.alert

    async def texts(self, number: str, count: int) -> list[str]:
        """What ``number`` was texted, once ``count`` whole messages are there."""
        for _ in range(500):
            try:
                got = self.sim.texts(number)
            except PayloadError:  # parts still to come
                got = []
            if len(got) >= count:
                return got
            await asyncio.sleep(0.01)
        raise AssertionError(f"{number} got {self.sim.texts(number)}, not {count} messages")

    async def page_code(self, number: str = LI) -> str:
        (page,) = await self.texts(number, 1)
        found = CODE.search(page)
        assert found, page
        return found.group(1)

    def acks(self, alert_id: str) -> list[tuple[str, str, str]]:
        return [(r.action, r.actor, r.channel) for r in self.store.alert_log(alert_id) if r.action == "acknowledged"]


@pytest.fixture
async def rigs(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    """Builds the rig for a site (``site`` keywords); stops what it started afterwards."""
    cleanup: list[Callable[[], Awaitable[None]]] = []

    async def make(**options: Any) -> Rig:
        sim = PtyModem(tmp_path / "ttyGSM")
        sim.open()
        config = parse_config(site(tmp_path, **options), file="<test>")
        store = Store(config.store_path)
        clock = VirtualClock()
        holder: list[Notifier] = []

        def on(t: Transition) -> None:
            holder[0].on_transition(t)

        alerts = AlertPath(Registry(config), store, clock, config.topic_prefix, site_rules(config), notify=on)
        settings = config.channels[0]
        assert isinstance(settings, SmsSettings)
        channel = SmsChannel("sms", settings, clock)
        notifier = Notifier(config, store, clock, alerts, {"sms": channel})
        holder.append(notifier)
        replies = SmsReplies("sms", channel.modem, config, store, clock, alerts, wake=notifier.wake["sms"])
        sending = asyncio.create_task(notifier.run_channel("sms"))

        async def stop() -> None:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            await channel.close()
            store.close()
            sim.close()

        cleanup.append(stop)
        return Rig(sim, config, clock, store, alerts, notifier, channel, replies)

    try:
        yield make
    finally:
        for stop in cleanup:
            await stop()


@pytest.fixture
async def rig(rigs: Callable[..., Awaitable[Rig]]) -> Rig:
    return await rigs()


async def test_a_ucs2_reply_from_a_known_phone_acknowledges_and_is_answered(rig: Rig) -> None:
    alert = rig.sos()
    code = await rig.page_code(LI)
    assert code == ReplyCodes(rig.store).known(alert.id) and all(c in ALPHABET for c in code)
    (son_page,) = await rig.texts(SON, 1)
    assert f"回复 1 {code} 确认" in son_page  # the same code for everyone paged about this alert
    (index,) = rig.sim.deliver(LI, f"确认 {code}")
    incoming = decode_deliver(rig.sim.inbox[index].pdu)
    assert incoming.dcs == 0x08 and incoming.number == LI  # an SMS-DELIVER in UCS2, as a phone sends it
    (outcome,) = await rig.replies.poll()
    assert (outcome.result, outcome.alert_id, outcome.person) == ("acknowledged", alert.id, "s-li")
    acked = rig.store.alert(alert.id)
    assert acked is not None and acked.acked_by == "s-li" and acked.acked_via == "sms"
    assert rig.acks(alert.id) == [("acknowledged", "s-li", "sms")]  # the audit trail names the person
    assert rig.sim.inbox == {} and rig.sim.deleted == [index]  # read, then deleted: the SIM never fills
    answer = (await rig.texts(LI, 2))[-1]
    assert answer.startswith("已确认：【紧急呼叫】") and f"（{code}）" in answer and "升级已停止" in answer
    assert rig.store.counters()["sms.replies.acknowledged"] == 1
    # The answer went through the durable queue and is in the trail like any delivery.
    assert any(
        r.action == "delivered" and (r.detail or {}).get("kind") == "reply" for r in rig.store.alert_log(alert.id)
    )


async def test_a_gsm7_reply_from_the_national_form_of_a_number_counts_too(rig: Rig) -> None:
    alert = rig.sos()
    code = await rig.page_code(SON)
    rig.sim.deliver("8613800000001", f"1{code.lower()}", gsm7=True)  # "86…" as type unknown, lower case, no space
    (outcome,) = await rig.replies.poll()
    assert outcome.result == "acknowledged" and outcome.person == "contact:r1:0"
    assert rig.acks(alert.id) == [("acknowledged", "contact:r1:0", "sms")]


async def test_an_unknown_number_does_nothing(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    alert = rig.sos()
    code = await rig.page_code(LI)
    sent_before = len(rig.sim.sent)
    with caplog.at_level(logging.WARNING, "sensegate.replies"):
        rig.sim.deliver(STRANGER, f"1 {code}")
        rig.sim.deliver(STRANGER, f"1 {code}")
        outcomes = await rig.replies.poll()
    assert [o.result for o in outcomes] == ["unknown_number", "unknown_number"]
    assert rig.store.alert(alert.id).acked_at is None  # type: ignore[union-attr]
    assert rig.acks(alert.id) == [] and rig.sim.inbox == {}  # ignored, and still deleted
    assert rig.store.counters()["sms.replies.unknown_number"] == 2
    logged = [r.getMessage() for r in caplog.records if "unknown number" in r.getMessage()]
    assert len(logged) == 1 and "+86139****9999" in logged[0] and STRANGER not in logged[0]  # logged once, masked
    await asyncio.sleep(0.2)
    assert len(rig.sim.sent) == sent_before  # no answer: a stranger learns nothing


async def test_a_wrong_code_does_nothing(rig: Rig) -> None:
    alert = rig.sos()
    code = await rig.page_code(LI)
    wrong = next(c for c in ("2345", "ZZZZ", "7K3Q") if c != code)
    sent_before = len(rig.sim.sent)
    rig.sim.deliver(LI, f"1 {wrong}")
    rig.sim.deliver(LI, "收到，马上到")  # not a reply at all
    outcomes = await rig.replies.poll()
    assert [o.result for o in outcomes] == ["bad_code", "not_a_reply"]
    assert rig.acks(alert.id) == [] and rig.sim.inbox == {}
    counters = rig.store.counters()
    assert counters["sms.replies.bad_code"] == 1 and counters["sms.replies.not_a_reply"] == 1
    await asyncio.sleep(0.2)
    assert len(rig.sim.sent) == sent_before


async def test_a_second_reply_is_told_who_was_first_and_nothing_acts_twice(rig: Rig) -> None:
    alert = rig.sos()
    code = await rig.page_code(LI)
    rig.sim.deliver(LI, f"1 {code}")
    rig.sim.deliver(SON, f"确认{code}")
    rig.sim.deliver(SON, f"确认{code}")  # twice: one answer only (the queue's key)
    outcomes = await rig.replies.poll()
    assert [(o.result, o.person) for o in outcomes] == [
        ("acknowledged", "s-li"),
        ("already", "contact:r1:0"),
        ("already", "contact:r1:0"),
    ]
    assert rig.acks(alert.id) == [("acknowledged", "s-li", "sms")]
    # The son was paged: he gets the notice that 李值班 took it, and one answer to his replies.
    texts = await rig.texts(SON, 3)
    await asyncio.sleep(0.2)
    assert len(rig.sim.texts(SON)) == 3
    answers = [t for t in texts[1:] if t.startswith("该报警已由李值班于")]
    assert len(answers) == 1 and f"确认（{code}）" in answers[0]
    assert any("已由李值班确认" in t for t in texts[1:])


async def test_a_known_person_not_paged_may_still_acknowledge(rig: Rig) -> None:
    alert = rig.sos()
    code = await rig.page_code(LI)
    rig.sim.deliver("+86" + WANG, f"1 {code}")
    (outcome,) = await rig.replies.poll()
    assert outcome.result == "acknowledged" and rig.acks(alert.id) == [("acknowledged", "s-wang", "sms")]


async def test_the_sim_never_fills(rig: Rig) -> None:
    rig.sim.capacity = 10
    for _ in range(4):
        for n in range(8):
            rig.sim.deliver(STRANGER, f"广告 {n}")
        await rig.replies.poll()
    assert rig.sim.lost == 0 and rig.sim.inbox == {} and len(rig.sim.deleted) == 32


async def test_a_long_reply_is_joined_and_an_incomplete_one_is_dropped_in_time(rig: Rig) -> None:
    alert = rig.sos()
    code = await rig.page_code(LI)
    indexes = rig.sim.deliver(LI, "已到现场，" * 30 + f"确认 {code}", reference=9)
    assert len(indexes) == 3
    (outcome,) = await rig.replies.poll()
    assert outcome.result == "not_a_reply" and rig.sim.inbox == {}  # one message, not three
    parts = rig.sim.deliver(LI, "老人无碍，" * 30, reference=10)
    del rig.sim.inbox[parts[1]]  # the middle part never comes
    assert await rig.replies.poll() == [] and len(rig.sim.inbox) == 2  # waits for it
    await rig.clock.advance(601)
    assert await rig.replies.poll() == [] and rig.sim.inbox == {}
    assert rig.store.counters()["sms.replies.incomplete"] == 1
    assert rig.acks(alert.id) == []


async def test_the_reader_survives_the_modem_going_away(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.sim.vanish()
    task = asyncio.create_task(rig.replies.run())
    try:
        await asyncio.sleep(0.1)
        await rig.clock.advance(5)
        await asyncio.sleep(0.1)
        rig.sim.reappear()
        rig.sim.deliver(STRANGER, "hi")
        await rig.clock.advance(5)
        for _ in range(100):
            if not rig.sim.inbox:
                break
            await rig.clock.advance(5)
            await asyncio.sleep(0.02)
        assert rig.sim.inbox == {} and not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sum("cannot read replies" in r.getMessage() for r in caplog.records) == 1


async def test_with_a_public_url_each_phone_also_gets_its_own_link(rigs: Callable[..., Awaitable[Rig]]) -> None:
    rig = await rigs(public_url="https://sg.test:8480")
    alert = rig.sos()
    pages = {n: (await rig.texts(n, 1))[0] for n in (LI, SON)}
    signer = LinkSigner(store_key(rig.store))
    for number, person in ((LI, "s-li"), (SON, "contact:r1:0")):
        text = pages[number]
        assert "回复 1 " in text and "（或打开下方链接）" in text
        last = text.rsplit("\n", 1)[1]
        assert last.startswith(f"确认链接：https://sg.test:8480/ack/{alert.id}/")
        assert signer.verify(alert.id, last.rsplit("/", 1)[1], rig.clock.now()).person == person


async def test_no_reply_hint_where_replies_are_not_read(rigs: Callable[..., Awaitable[Rig]]) -> None:
    rig = await rigs(replies=False)
    rig.sos()
    (page,) = await rig.texts(LI, 1)
    assert "回复" not in page and "请尽快处置，并告知值班室确认" in page


# ---------------------------------------------------------------------- pure parts


def test_what_counts_as_a_reply() -> None:
    for text in (
        "1 7K3Q",
        "17k3q",
        "确认 7K3Q",
        "确认7K3Q",
        "确认：7K3Q",
        "７Ｋ３Ｑ",
        " 7K3Q ",
        "1 7K3Q。",
        "「1 7K3Q」",
        "7K3Q 确认",
        "ok 7K3Q",
    ):
        assert parse_reply(text) == "7K3Q", text
    for text in ("", "1", "收到", "1 7K3", "1 7K3QQ", "2 7K3Q", "1 7K3O", "1 0K3Q", "请回电", "1 7K3Q 7K3Q"):
        assert parse_reply(text) is None, text


def test_phone_numbers_compare_as_chinese_numbers() -> None:
    assert {phone_key(p) for p in ("+86 138-0000-0011", "008613800000011", "8613800000011", "13800000011")} == {
        "13800000011"
    }
    assert phone_key("10086") == "10086" and phone_key("+447930250969") == "447930250969"


def test_codes_are_unique_among_open_alerts_stable_and_kept_a_week_after_closing(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.db")
    codes = ReplyCodes(store)
    now = 1_767_225_600.0

    def alert(n: int) -> Alert:
        return Alert(f"{n:012x}", f"k{n}", "sos", Severity.CRITICAL, AlertState.RAISED, now, now, "【紧急呼叫】", "SOS")

    alerts = [alert(n) for n in range(300)]
    store.save_notify(alerts=alerts)
    given = [codes.code_for(a, now) for a in alerts]
    assert len(set(given)) == 300 and all(len(c) == 4 and set(c) <= set(ALPHABET) for c in given)
    assert [codes.code_for(a, now) for a in alerts[:5]] == given[:5]  # the same code every time
    assert ReplyCodes(store).alert_for(given[7].lower()) == alerts[7].id  # after a restart too
    closed = replace(alerts[0], state=AlertState.RESOLVED, resolved_at=now)
    store.save_notify(alerts=[closed])
    codes.code_for(alert(1000), now + RESERVED_AFTER_CLOSE - 1)
    assert codes.alert_for(given[0]) == alerts[0].id  # still reserved: a late reply finds the closed alert
    codes.code_for(alert(1001), now + RESERVED_AFTER_CLOSE + 1)
    assert codes.alert_for(given[0]) is None  # then free again
    store.close()
