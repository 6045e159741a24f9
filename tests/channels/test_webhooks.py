"""The HTTP alert channels (generic signed JSON, WeCom robot, DingTalk robot) against a real
local receiver (tests/receivers.py) that checks signatures, keys and body shapes itself."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import traceback
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.alerts.channels.base import Channel, Notification, Recipient
from gateway.alerts.channels.dingtalk import TEXT_LIMIT as DINGTALK_TEXT_LIMIT
from gateway.alerts.channels.dingtalk import DingTalkChannel
from gateway.alerts.channels.http import header_safe, normalise_mobile, truncate_utf8
from gateway.alerts.channels.webhook import WebhookChannel
from gateway.alerts.channels.wecom import MARKDOWN_LIMIT, TRUNCATED, WeComChannel
from gateway.clock import VirtualClock
from gateway.errors import RejectedBatchError, RetryableSinkError, SinkError
from gateway.site.alerting import DingTalkChannelSettings, WebhookChannelSettings, WeComChannelSettings
from tests.receivers import Receiver

# As the notifier renders them: the title names the grade, the text ends with the alert id.
TITLE = "【一级(特别重大)·报警】【紧急呼叫】1号楼1单元101室 独居老人刘素芬 按下紧急呼叫按钮"
TEXT = (
    "【紧急呼叫】1号楼1单元101室 卧室 独居老人刘素芬 按下紧急呼叫按钮，请立即处置\n"
    "时间：11-22 03:12\n"
    "确认请回复：sensegate alerts ack 7c97d1cc6c03\n"
    "告警编号：7c97d1cc6c03"
)
FAMILY = Recipient("contact:r-101:1", "刘建国", "+86 138-0013-8000", "family")
STAFF = Recipient("staff-07", "王师傅", "13900139000", "property_staff")
NO_PHONE = Recipient("staff-09", "赵主任", "", "community_worker")


def note(key: str = "n-7c97d1cc6c03-1", **changes: Any) -> Notification:
    fields: dict[str, Any] = {
        "key": key,
        "alert_id": "7c97d1cc6c03",
        "kind": "raised",
        "severity": 1,
        "title": TITLE,
        "text": TEXT,
        "text_en": "SOS pressed at building 1, unit 1, flat 101 (alert 7c97d1cc6c03)",
        "recipients": (FAMILY, STAFF, NO_PHONE),
        "alert": {"id": "7c97d1cc6c03", "rule": "sos_pressed", "household": "1-1-101"},
        "created_at": 1_767_225_600.0,
    }
    fields.update(changes)
    return Notification(**fields)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def rx(clock: VirtualClock) -> Iterator[Receiver]:
    with Receiver(now=clock.now) as receiver:
        yield receiver


def leaks(exc: BaseException, *secrets: str) -> list[str]:
    """The secrets found in an exception's message, repr or formatted traceback (with chain)."""
    text = str(exc) + repr(exc) + "".join(traceback.format_exception(exc))
    return [s for s in secrets if s in text]


# ---------------------------------------------------------------------------------------------
# Generic JSON webhook
# ---------------------------------------------------------------------------------------------


def webhook_settings(rx: Receiver, **changes: Any) -> WebhookChannelSettings:
    data: dict[str, Any] = {"type": "webhook", "id": "hook", "url": rx.webhook_url, "secret": rx.webhook_secret}
    data.update(changes)
    return WebhookChannelSettings.model_validate(data)


@pytest.fixture
async def hook(rx: Receiver, clock: VirtualClock) -> AsyncIterator[WebhookChannel]:
    channel = WebhookChannel(webhook_settings(rx, timeout=2.0), clock)
    await channel.open()
    yield channel
    await channel.close()


async def test_webhook_posts_the_notification_signed_with_its_idempotency_key(
    rx: Receiver, hook: WebhookChannel, clock: VirtualClock
) -> None:
    n = note()
    await hook.send(n)

    [got] = rx.unique("webhook")
    assert got.body == {"schema_version": 1, **n.to_dict()}
    assert got.headers["idempotency-key"] == n.key
    assert got.headers["content-type"] == "application/json; charset=utf-8"
    stamp = got.headers["x-sensegate-timestamp"]
    assert stamp == str(int(clock.now()))
    # The documented scheme, computed here independently of the channel and the receiver.
    expected = hmac.new(rx.webhook_secret.encode(), f"{stamp}.".encode() + got.raw, hashlib.sha256).hexdigest()
    assert got.headers["x-sensegate-signature"] == f"sha256={expected}"
    # Chinese travels as UTF-8, not as \u escapes, and arrives intact.
    assert TITLE.encode("utf-8") in got.raw
    assert got.body["text"] == TEXT and got.body["recipients"][0]["name"] == "刘建国"


async def test_webhook_retry_keeps_the_key_and_signs_afresh_and_the_receiver_dedupes(
    rx: Receiver, hook: WebhookChannel, clock: VirtualClock
) -> None:
    n = note()
    rx.fail_next(1, status=503)
    with pytest.raises(RetryableSinkError, match="HTTP 503"):
        await hook.send(n)
    await clock.advance(30)
    await hook.send(n)
    await hook.send(n)  # the gateway died before committing "done": sent once more

    attempts = rx.attempts
    assert [a.key for a in attempts] == [n.key] * 3
    assert int(attempts[1].headers["x-sensegate-timestamp"]) == int(attempts[0].headers["x-sensegate-timestamp"]) + 30
    assert rx.unique_keys("webhook") == {n.key}
    assert len(rx.unique("webhook")) == 1 and rx.duplicates == 1


async def test_webhook_a_key_that_cannot_travel_in_a_header_is_percent_encoded(
    rx: Receiver, hook: WebhookChannel
) -> None:
    await hook.send(note("告警/7c97d1cc6c03/升级"))
    [got] = rx.unique("webhook")  # the receiver matched the header against the body's key
    assert got.key == "%E5%91%8A%E8%AD%A6%2F7c97d1cc6c03%2F%E5%8D%87%E7%BA%A7"
    assert got.body["key"] == "告警/7c97d1cc6c03/升级"


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_webhook_transient_statuses_are_retryable(rx: Receiver, hook: WebhookChannel, status: int) -> None:
    rx.fail_next(1, status=status, errmsg="稍后再试")
    with pytest.raises(RetryableSinkError, match=f"HTTP {status}: 稍后再试"):
        await hook.send(note())


@pytest.mark.parametrize("status", [400, 403, 404, 410, 413, 422])
async def test_webhook_other_4xx_are_rejected_with_the_receivers_reason(
    rx: Receiver, hook: WebhookChannel, status: int
) -> None:
    rx.fail_next(1, status=status, errmsg="unknown household 9-9-999 " + "x" * 1000)
    with pytest.raises(RejectedBatchError, match=f"HTTP {status}: unknown household 9-9-999") as caught:
        await hook.send(note())
    assert len(str(caught.value)) < 400  # the reason is truncated


async def test_webhook_wrong_secret_is_rejected_by_the_receiver_and_not_leaked(
    rx: Receiver, clock: VirtualClock
) -> None:
    wrong = "not-the-receivers-secret-abcdef"
    channel = WebhookChannel(webhook_settings(rx, secret=wrong), clock)
    with pytest.raises(RejectedBatchError, match="HTTP 401: bad signature") as caught:
        await channel.send(note())
    await channel.close()
    assert leaks(caught.value, wrong, rx.webhook_secret) == []
    assert [r.outcome for r in rx.rejected] == ["rejected: bad signature"]


async def test_webhook_stale_timestamp_is_refused_by_the_receiver(rx: Receiver, hook: WebhookChannel) -> None:
    rx.now = lambda: VirtualClock().now() + 3600  # the receiver's clock is an hour ahead
    with pytest.raises(RejectedBatchError, match="stale timestamp"):
        await hook.send(note())
    assert rx.unique() == []


async def test_webhook_unreachable_dropped_or_slow_receiver_is_retryable(
    rx: Receiver, hook: WebhookChannel, clock: VirtualClock
) -> None:
    rx.down()
    with pytest.raises(RetryableSinkError, match="cannot reach"):
        await hook.send(note("k1"))
    rx.up()
    rx.drop_next(1)
    with pytest.raises(RetryableSinkError, match="cannot reach"):
        await hook.send(note("k2"))
    slow = WebhookChannel(webhook_settings(rx, timeout=0.2), clock)
    rx.delay_next(1, 0.6)
    with pytest.raises(RetryableSinkError, match="cannot reach"):
        await slow.send(note("k3"))
    await slow.close()
    for key in ("k1", "k2", "k3"):
        await hook.send(note(key))
    assert rx.unique_keys("webhook") == {"k1", "k2", "k3"}


async def test_webhook_url_token_and_secret_never_appear_in_errors(rx: Receiver, clock: VirtualClock) -> None:
    url_token = "tok-9f8e7d6c5b4a"
    channel = WebhookChannel(webhook_settings(rx, url=f"{rx.webhook_url}?token={url_token}"), clock)
    rx.down()
    try:
        with pytest.raises(RetryableSinkError) as caught:
            await channel.send(note())
    finally:
        rx.up()
    assert leaks(caught.value, url_token, rx.webhook_secret) == []
    assert url_token not in repr(channel) and rx.webhook_secret not in repr(channel)


async def test_open_does_no_io_and_close_is_idempotent(rx: Receiver, clock: VirtualClock) -> None:
    rx.down()
    try:
        channels: list[Channel] = [  # each satisfies the contract, checked by mypy
            WebhookChannel(webhook_settings(rx), clock),
            WeComChannel(wecom_settings(rx), clock),
            DingTalkChannel(dingtalk_settings(rx), clock),
        ]
        for channel in channels:
            await channel.open()  # a receiver down at start-up is not an error
            await channel.close()
            await channel.close()
            assert channel.name in ("hook", "wecom-group", "ding-group")
    finally:
        rx.up()


# ---------------------------------------------------------------------------------------------
# WeCom group robot
# ---------------------------------------------------------------------------------------------


def wecom_settings(rx: Receiver, **changes: Any) -> WeComChannelSettings:
    data: dict[str, Any] = {"type": "wecom", "id": "wecom-group", "url": rx.wecom_url, "token": rx.wecom_key}
    data.update(changes)
    return WeComChannelSettings.model_validate(data)


@pytest.fixture
async def wecom(rx: Receiver, clock: VirtualClock) -> AsyncIterator[WeComChannel]:
    channel = WeComChannel(wecom_settings(rx, timeout=2.0), clock)
    await channel.open()
    yield channel
    await channel.close()


async def test_wecom_sends_coloured_markdown_then_mentions_by_phone(rx: Receiver, wecom: WeComChannel) -> None:
    n = note()
    await wecom.send(n)

    markdown, mention = rx.unique("wecom")
    assert markdown.query == {"key": rx.wecom_key}
    assert markdown.key == mention.key == n.key
    content = markdown.body["markdown"]["content"]
    assert content == f'### <font color="warning">{TITLE}</font>\n{TEXT}'  # words untouched, id once
    assert mention.body["msgtype"] == "text"
    assert mention.body["text"]["mentioned_mobile_list"] == ["13800138000", "13900139000"]
    assert "7c97d1cc6c03" in mention.body["text"]["content"]


async def test_a_text_that_does_not_name_the_alert_gets_a_footer_and_a_grade_label(
    rx: Receiver, wecom: WeComChannel, ding: DingTalkChannel
) -> None:
    n = note(title="【紧急呼叫】1号楼1单元101室", text="老人按下紧急呼叫按钮\n请立即处置", recipients=())
    await wecom.send(n)
    await ding.send(n)
    [wecom_got] = rx.unique("wecom")
    [ding_got] = rx.unique("dingtalk")
    assert wecom_got.body["markdown"]["content"] == (
        '### <font color="warning">[一级(特别重大)] 【紧急呼叫】1号楼1单元101室</font>\n'
        "老人按下紧急呼叫按钮\n请立即处置\n"
        '<font color="comment">告警编号：7c97d1cc6c03</font>'
    )
    assert ding_got.body["markdown"] == {
        "title": "[一级(特别重大)] 【紧急呼叫】1号楼1单元101室",
        "text": "### [一级(特别重大)] 【紧急呼叫】1号楼1单元101室\n\n老人按下紧急呼叫按钮\n\n请立即处置\n\n"
        "> 告警编号：7c97d1cc6c03",
    }
    assert ding_got.body["at"] == {"atMobiles": [], "isAtAll": False}


async def test_wecom_colour_follows_severity_and_kind_and_mentions_can_be_off(
    rx: Receiver, clock: VirtualClock
) -> None:
    channel = WeComChannel(wecom_settings(rx, mention=False), clock)
    await channel.send(note("a", severity=4, title="【设备维护】3号楼烟感低电量 四级(一般)"))
    await channel.send(note("b", kind="resolved", title="【已处置】1号楼1单元101室 紧急呼叫"))
    await channel.close()
    first, second = (d.body["markdown"]["content"] for d in rx.unique("wecom"))
    # The title already names the grade: no second label.
    assert first.startswith('### <font color="comment">【设备维护】3号楼烟感低电量 四级(一般)</font>')
    assert second.startswith('### <font color="info">[一级(特别重大)] 【已处置】')
    assert [d.msgtype for d in rx.unique("wecom")] == ["markdown", "markdown"]


@pytest.mark.parametrize("errcode", [45009, -1])
async def test_wecom_rate_limit_is_retryable_and_only_the_missing_part_is_resent(
    rx: Receiver, wecom: WeComChannel, errcode: int
) -> None:
    rx.errcode_next(1, errcode, "api freq out of limit")
    with pytest.raises(RetryableSinkError, match=f"errcode {errcode}: api freq out of limit"):
        await wecom.send(note())
    assert rx.unique("wecom") == []

    # The markdown goes through, the mention hits the limit: the retry sends only the mention.
    rx.reset()
    markdown_ok_then_limited = note("second")
    rx.errcode_next(1, errcode, "api freq out of limit", after=1)
    with pytest.raises(RetryableSinkError):
        await wecom.send(markdown_ok_then_limited)
    await wecom.send(markdown_ok_then_limited)
    assert [d.msgtype for d in rx.deliveries("wecom")] == ["markdown", "text"]
    assert rx.duplicates == 0


async def test_wecom_invalid_key_is_rejected_without_leaking_it(rx: Receiver, clock: VirtualClock) -> None:
    wrong = "5f1c2d3e-wrong-key-4b5a"
    channel = WeComChannel(wecom_settings(rx, token=wrong), clock)
    with pytest.raises(RejectedBatchError, match="errcode 93000: invalid webhook url") as caught:
        await channel.send(note())
    await channel.close()
    assert leaks(caught.value, wrong) == []
    assert wrong not in repr(channel) and wrong not in repr(wecom_settings(rx, token=wrong))


async def test_wecom_other_failures(rx: Receiver, wecom: WeComChannel) -> None:
    rx.fail_next(1, status=502)
    with pytest.raises(RetryableSinkError, match="HTTP 502"):
        await wecom.send(note())
    rx.fail_next(1, status=200, errmsg="captive portal")  # 200 without an errcode
    with pytest.raises(RetryableSinkError, match="without an errcode"):
        await wecom.send(note())
    rx.errcode_next(1, 40058, "markdown.content exceed max length 4096")
    with pytest.raises(RejectedBatchError, match="40058"):
        await wecom.send(note())
    rx.down()
    try:
        with pytest.raises(RetryableSinkError, match="cannot reach") as caught:
            await wecom.send(note())
    finally:
        rx.up()
    assert leaks(caught.value, rx.wecom_key) == []


async def test_wecom_long_text_is_cut_at_a_character_boundary_within_the_limit(
    rx: Receiver, wecom: WeComChannel
) -> None:
    long_text = TEXT + "\n" + "老人长时间无活动，请尽快上门查看。🚨" * 400
    await wecom.send(note(text=long_text, recipients=()))
    [got] = rx.unique("wecom")  # the receiver refuses anything over 4096 bytes
    content = got.body["markdown"]["content"]
    assert len(content.encode("utf-8")) <= MARKDOWN_LIMIT
    assert TRUNCATED in content and content.endswith("告警编号：7c97d1cc6c03</font>")
    body = content.split("</font>\n", 1)[1].split(TRUNCATED)[0]
    assert long_text.startswith(body)


# ---------------------------------------------------------------------------------------------
# DingTalk custom robot (signed)
# ---------------------------------------------------------------------------------------------


def dingtalk_settings(rx: Receiver, **changes: Any) -> DingTalkChannelSettings:
    data: dict[str, Any] = {
        "type": "dingtalk",
        "id": "ding-group",
        "url": rx.dingtalk_url,
        "token": rx.dingtalk_token,
        "secret": rx.dingtalk_secret,
    }
    data.update(changes)
    return DingTalkChannelSettings.model_validate(data)


@pytest.fixture
async def ding(rx: Receiver, clock: VirtualClock) -> AsyncIterator[DingTalkChannel]:
    channel = DingTalkChannel(dingtalk_settings(rx, timeout=2.0), clock)
    await channel.open()
    yield channel
    await channel.close()


async def test_dingtalk_sends_signed_markdown_with_at_mobiles_in_the_text(
    rx: Receiver, ding: DingTalkChannel, clock: VirtualClock
) -> None:
    n = note()
    await ding.send(n)

    [got] = rx.unique("dingtalk")
    stamp = got.query["timestamp"]
    assert stamp == str(int(clock.now() * 1000))
    secret = rx.dingtalk_secret.encode()
    expected = base64.b64encode(hmac.new(secret, f"{stamp}\n{rx.dingtalk_secret}".encode(), hashlib.sha256).digest())
    assert got.query["sign"] == expected.decode() and got.query["access_token"] == rx.dingtalk_token
    assert got.key == n.key
    md = got.body["markdown"]
    assert md["title"] == TITLE and len(md["title"]) <= 64
    paragraphs = "\n\n".join(TEXT.splitlines())
    assert md["text"] == f"### {TITLE}\n\n{paragraphs}\n\n@13800138000 @13900139000"
    assert got.body["at"] == {"atMobiles": ["13800138000", "13900139000"], "isAtAll": False}


async def test_dingtalk_retry_is_signed_with_a_fresh_timestamp(
    rx: Receiver, ding: DingTalkChannel, clock: VirtualClock
) -> None:
    rx.errcode_next(1, 130101, "send too fast, exceed 20 times per minute")
    with pytest.raises(RetryableSinkError, match="errcode 130101"):
        await ding.send(note())
    await clock.advance(600)
    await ding.send(note())
    first, second = rx.attempts
    assert int(second.query["timestamp"]) - int(first.query["timestamp"]) == 600_000
    assert len(rx.unique("dingtalk")) == 1


@pytest.mark.parametrize("errcode", [130101, 410100, -1])
async def test_dingtalk_rate_limits_are_retryable(rx: Receiver, ding: DingTalkChannel, errcode: int) -> None:
    rx.errcode_next(1, errcode)
    with pytest.raises(RetryableSinkError):
        await ding.send(note())


async def test_dingtalk_wrong_secret_or_token_is_rejected_without_leaking_them(
    rx: Receiver, clock: VirtualClock
) -> None:
    bad_secret = "SECwrong0123456789abcdef"
    channel = DingTalkChannel(dingtalk_settings(rx, secret=bad_secret), clock)
    with pytest.raises(RejectedBatchError, match="errcode 310000: sign not match") as caught:
        await channel.send(note())
    assert leaks(caught.value, bad_secret, rx.dingtalk_token) == []

    bad_token = "0123456789abcdef-wrong-token"
    channel = DingTalkChannel(dingtalk_settings(rx, token=bad_token), clock)
    with pytest.raises(RejectedBatchError, match="errcode 300001") as caught:
        await channel.send(note())
    assert leaks(caught.value, bad_token, rx.dingtalk_secret) == []
    assert bad_token not in repr(channel) and rx.dingtalk_secret not in repr(channel)
    assert rx.unique() == []


async def test_dingtalk_gateway_clock_off_by_more_than_an_hour_is_rejected(
    rx: Receiver, ding: DingTalkChannel, clock: VirtualClock
) -> None:
    clock.set(clock.now() - 2 * 3600)  # the receiver still reads the original time
    rx.now = lambda: VirtualClock().now()
    with pytest.raises(RejectedBatchError, match="310000: invalid timestamp"):
        await ding.send(note())


async def test_dingtalk_unreachable_is_retryable_without_leaking(rx: Receiver, ding: DingTalkChannel) -> None:
    rx.down()
    try:
        with pytest.raises(RetryableSinkError, match="cannot reach") as caught:
            await ding.send(note())
    finally:
        rx.up()
    assert leaks(caught.value, rx.dingtalk_token, rx.dingtalk_secret) == []


async def test_dingtalk_long_text_is_cut_within_the_limit_keeping_the_mentions(
    rx: Receiver, ding: DingTalkChannel
) -> None:
    long_text = "\n".join(["卫生间滞留超过45分钟，请家属或网格员上门查看。👵"] * 2000)
    await ding.send(note(text=long_text))
    [got] = rx.unique("dingtalk")
    text = got.body["markdown"]["text"]
    assert len(text.encode("utf-8")) <= DINGTALK_TEXT_LIMIT
    assert TRUNCATED in text and text.endswith("@13800138000 @13900139000")


async def test_a_receiver_echoing_the_secret_in_its_reason_is_redacted(rx: Receiver, clock: VirtualClock) -> None:
    token = "tok/with+special=chars"  # URL-encoded in the query: both forms must go
    ding = DingTalkChannel(dingtalk_settings(rx, token=token), clock)
    wecom = WeComChannel(wecom_settings(rx, token=token), clock)
    for channel in (ding, wecom):
        rx.fail_next(1, status=403, errmsg=f"forbidden: {token} / tok%2Fwith%2Bspecial%3Dchars")
        with pytest.raises(RejectedBatchError, match="forbidden: \\*\\*\\*") as caught:
            await channel.send(note())
        assert leaks(caught.value, token, "tok%2Fwith%2Bspecial%3Dchars") == []
        rx.errcode_next(1, 93000, f"invalid key {token}")
        with pytest.raises(RejectedBatchError) as caught:
            await channel.send(note())
        assert leaks(caught.value, token) == []
        await channel.close()


# ---------------------------------------------------------------------------------------------
# Pure helpers and settings
# ---------------------------------------------------------------------------------------------


def test_truncate_utf8_never_splits_a_character_and_respects_the_limit() -> None:
    text = "a老👵b" * 20  # 1-, 3- and 4-byte characters
    for limit in range(0, len(text.encode()) + 2):
        for marker in ("…", "…（已截断）", ""):
            cut = truncate_utf8(text, limit, marker)
            assert len(cut.encode("utf-8")) <= limit
            if len(text.encode()) <= limit:
                assert cut == text
            elif marker and len(marker.encode()) <= limit:
                assert cut.endswith(marker) and text.startswith(cut.removesuffix(marker))


def test_mobiles_are_normalised_for_the_robots() -> None:
    assert normalise_mobile("+86 138-0013-8000") == "13800138000"
    assert normalise_mobile("0086 13900139000") == "13900139000"
    assert normalise_mobile("+852 9123 4567") == "+85291234567"
    assert normalise_mobile("") == "" and normalise_mobile("无") == ""


def test_idempotency_keys_are_header_safe() -> None:
    assert header_safe("n-7c97d1cc6c03-1") == "n-7c97d1cc6c03-1"
    assert header_safe("告警\r\n1") == "%E5%91%8A%E8%AD%A6%0D%0A1"


def test_settings_forbid_unknown_keys_hide_secrets_and_are_frozen() -> None:
    with pytest.raises(ValidationError, match="extra_forbidden"):
        WebhookChannelSettings.model_validate(
            {"type": "webhook", "id": "h", "url": "https://example.com/h", "secret": "x" * 16, "sekret": "y"}
        )
    with pytest.raises(ValidationError):  # a short HMAC key
        WebhookChannelSettings.model_validate({"type": "webhook", "id": "h", "url": "https://e.com", "secret": "x"})
    with pytest.raises(ValidationError):  # not a URL
        WeComChannelSettings.model_validate({"type": "wecom", "id": "w", "token": "k", "url": "qyapi"})
    with pytest.raises(ValidationError):  # the 加签 secret is required
        DingTalkChannelSettings.model_validate({"type": "dingtalk", "id": "d", "token": "t"})
    settings = DingTalkChannelSettings.model_validate(
        {"type": "dingtalk", "id": "d", "token": "tok-abc", "secret": "SECxyz"}
    )
    assert settings.url == "https://oapi.dingtalk.com/robot/send"
    assert "tok-abc" not in repr(settings) and "SECxyz" not in json.dumps(settings.model_dump(mode="json"))
    with pytest.raises(ValidationError):
        settings.timeout = 1.0
    wecom = WeComChannelSettings.model_validate({"type": "wecom", "id": "w", "token": "k"})
    assert wecom.url == "https://qyapi.weixin.qq.com/cgi-bin/webhook/send" and wecom.mention is True


def test_every_channel_error_is_a_sink_error() -> None:
    assert issubclass(RetryableSinkError, SinkError) and issubclass(RejectedBatchError, SinkError)
