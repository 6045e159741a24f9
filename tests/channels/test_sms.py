"""The SMS channel through the modem simulator on a real pseudo-terminal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from drivers.gsm_pdu import UNITS_PER_PART, split_text, units
from gateway.alerts.channels.base import Channel, Notification, Recipient
from gateway.alerts.channels.sms import SmsChannel, masked, normalise_phone
from gateway.clock import VirtualClock
from gateway.errors import RejectedBatchError, RetryableSinkError
from gateway.site.alerting import SmsSettings
from simulators.gsm_modem import PtyModem

FAMILY = Recipient("contact:r-502:1", "王建国", "+8613800138000", "contact")
STAFF = Recipient("s-07", "李娜", "139 1234 5678", "property_staff")
NO_PHONE = Recipient("s-08", "赵磊", "", "property_staff")

TITLE = "【一级(特别重大)报警】3号楼2单元502室 独居老人王秀英 跌倒未起身"
BODY = (
    "毫米波雷达于 03:12 检测到卫生间内跌倒，至今 5 分钟未起身，请值班人员立即上门查看并联系家属。"
    "如已到场请确认接警。告警编号 9f3a01c2，确认请回复：sensegate alerts ack 9f3a01c2；"
    "处置完毕后请在系统中填写处置记录。本短信由智感网关自动发送，请勿直接回复本号码。"
    "联系不上请通知监控中心。"
)
TEXT = TITLE + "\n" + BODY  # what a phone shows: 200 characters


def note(*recipients: Recipient, key: str = "n-1", title: str = TITLE, text: str = BODY) -> Notification:
    return Notification(
        key=key,
        alert_id="9f3a01c2",
        kind="raised",
        severity=4,
        title=title,
        text=text,
        recipients=recipients,
    )


@dataclass
class Rig:
    sim: PtyModem
    channel: SmsChannel


def settings(port: Path, **extra: Any) -> SmsSettings:
    return SmsSettings.model_validate({"type": "sms", "id": "gsm1", "port": str(port), "timeout": 0.5, **extra})


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    sim = PtyModem(tmp_path / "ttyGSM")
    sim.open()
    channel = SmsChannel("gsm1", settings(tmp_path / "ttyGSM", send_timeout=0.5), VirtualClock())
    await channel.open()
    try:
        yield Rig(sim, channel)
    finally:
        await channel.close()
        await channel.close()  # safe twice
        sim.close()


def test_it_is_a_channel_and_its_settings_validate(tmp_path: Path) -> None:
    channel: Channel = SmsChannel("gsm1", settings(tmp_path / "x"), VirtualClock())
    assert channel.name == "gsm1"
    s = settings(tmp_path / "x")
    assert (s.baudrate, s.max_parts, s.pin, s.send_timeout) == (115200, 4, "", 60.0)
    for bad in ({"bogus": 1}, {"pin": "env:SIM_PIN"}, {"pin": "12"}, {"max_parts": 0}, {"baudrate": 1234}):
        with pytest.raises(ValidationError):
            settings(tmp_path / "x", **bad)


def test_phone_numbers() -> None:
    assert normalise_phone("139 1234 5678") == "13912345678"
    assert normalise_phone("+86 138-0013-8000") == "+8613800138000"
    assert normalise_phone("008613800138000") == "+8613800138000"
    assert masked("+8613800138000") == "+86138****8000"


async def test_a_long_chinese_alert_reaches_two_phones_exactly(rig: Rig) -> None:
    text = TEXT
    assert len(text) == units(text) == 200
    await rig.channel.send(note(FAMILY, STAFF, NO_PHONE))
    assert rig.sim.texts("+8613800138000") == [text]
    assert rig.sim.texts("13912345678") == [text]
    parts = rig.sim.submits("+8613800138000")
    assert len(parts) == len(split_text(text)) >= 3
    assert all(p.dcs == 0x08 and p.concat is not None for p in parts)
    assert units(parts[0].text) == UNITS_PER_PART
    # the two messages carry different concatenation references
    assert {p.concat.ref for p in parts if p.concat} != {
        p.concat.ref for p in rig.sim.submits("13912345678") if p.concat
    }
    assert rig.channel.counters["messages"] == 2 and rig.channel.counters["no_phone"] == 1
    status = rig.channel.status()
    assert status["registered"] is True and status["signal_dbm"] == -73 and status["last_error"] == ""


async def test_exactly_200_characters(rig: Rig) -> None:
    body = ("跌倒报警请立即处置" * 30)[:199]
    await rig.channel.send(note(FAMILY, title="", text=body + "😀"))
    (got,) = rig.sim.texts()
    assert got == body + "😀" and len(got) == 200
    assert len(rig.sim.sent) == 3


async def test_over_max_parts_is_cut_with_an_ellipsis(tmp_path: Path) -> None:
    sim = PtyModem(tmp_path / "ttyGSM")
    sim.open()
    channel = SmsChannel("gsm1", settings(tmp_path / "ttyGSM", max_parts=2), VirtualClock())
    try:
        await channel.send(note(FAMILY, text=BODY * 3))
        (got,) = sim.texts()
        assert got.endswith("…") and (TITLE + "\n" + BODY * 3).startswith(got[:-1])
        assert len(sim.sent) == 2 and channel.counters["truncated"] == 1
    finally:
        await channel.close()
        sim.close()


async def test_not_registered_sends_nothing(rig: Rig) -> None:
    rig.sim.registration = 3  # denied
    with pytest.raises(RetryableSinkError, match="not registered"):
        await rig.channel.send(note(FAMILY, STAFF))
    assert rig.sim.sent == []
    assert rig.channel.registered is False and "denied" in rig.channel.last_error
    rig.sim.registration = 1
    await rig.channel.send(note(FAMILY, STAFF))
    assert len(rig.sim.texts()) == 2


async def test_a_retry_after_partial_success_texts_only_the_rest(rig: Rig) -> None:
    rig.sim.cms_error_for["13912345678"] = 42  # congestion: worth a retry
    with pytest.raises(RetryableSinkError):
        await rig.channel.send(note(FAMILY, STAFF))
    assert rig.sim.texts("+8613800138000") == [TEXT]
    assert rig.sim.texts("13912345678") == []
    del rig.sim.cms_error_for["13912345678"]
    await rig.channel.send(note(FAMILY, STAFF))  # the notifier's retry: same key
    assert rig.sim.texts("+8613800138000") == [TEXT]  # not texted twice
    assert rig.sim.texts("13912345678") == [TEXT]
    await rig.channel.send(note(FAMILY, key="n-2", text="已确认"))  # another note: texted again
    assert rig.sim.texts("+8613800138000")[-1] == TITLE + "\n已确认"


async def test_a_retry_mid_message_sends_only_the_missing_parts(rig: Rig) -> None:
    rig.sim.fail_once[1] = 41  # the second part: temporary failure
    with pytest.raises(RetryableSinkError):
        await rig.channel.send(note(FAMILY))
    assert len(rig.sim.sent) == 1
    await rig.channel.send(note(FAMILY))
    assert rig.sim.texts() == [TEXT]  # one message: its parts share one reference
    assert len(rig.sim.sent) == len(split_text(TEXT))


async def test_a_bad_number_is_rejected_and_the_others_still_get_it(rig: Rig) -> None:
    rig.sim.cms_error_for["+8613800138000"] = 1  # unassigned number
    bad = Recipient("s-09", "错号", "12-abc")
    with pytest.raises(RejectedBatchError) as err:
        await rig.channel.send(note(FAMILY, bad, STAFF))
    assert "not sent to 2 of 3" in str(err.value) and "+86138****8000" in str(err.value)
    assert "13800138000" not in str(err.value)
    assert rig.sim.texts("13912345678") == [TEXT]
    assert rig.channel.counters["rejected"] == 2


async def test_the_modem_vanishes_and_reappears(rig: Rig) -> None:
    await rig.channel.send(note(FAMILY, key="n-1", title="", text="第一条"))
    rig.sim.vanish()
    with pytest.raises(RetryableSinkError):
        await rig.channel.send(note(FAMILY, key="n-2", title="", text="第二条"))
    with pytest.raises(RetryableSinkError):
        await rig.channel.send(note(FAMILY, key="n-2", title="", text="第二条"))
    assert rig.channel.status()["open"] is False
    rig.sim.reappear()
    await rig.channel.send(note(FAMILY, key="n-2", title="", text="第二条"))
    assert rig.sim.texts() == ["第一条", "第二条"]
    assert rig.channel.modem.opens == 2


async def test_a_hung_modem_is_retryable(rig: Rig) -> None:
    rig.sim.mute = True
    with pytest.raises(RetryableSinkError, match="no answer"):
        await rig.channel.send(note(FAMILY))
    rig.sim.mute = False
    await rig.channel.send(note(FAMILY))
    assert rig.sim.texts() == [TEXT]


async def test_no_phone_at_all_is_not_an_error(rig: Rig) -> None:
    await rig.channel.send(note(NO_PHONE))
    assert rig.sim.sent == [] and rig.channel.counters["no_phone"] == 1


async def test_the_modem_health_is_checked_and_kept_for_status(rig: Rig) -> None:
    status = await rig.channel.check()
    assert status["registered"] is True and isinstance(status["signal_dbm"], int) and status["last_error"] == ""
    rig.sim.registration = 3  # registration denied
    status = await rig.channel.check()
    assert status["registered"] is False and "not registered" in status["last_error"]
