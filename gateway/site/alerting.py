"""Config models for getting alerts to people: every channel type's settings, the duty roster,
escalation ladders and routes (docs/alerts.md). ``gateway.site.config.SiteConfig`` holds them; the
cross-checks that need the whole site (known people, channels, ladders) are its ``check_targets``.
The channels themselves (gateway/alerts/channels/) take these settings.

Targets name who a ladder tier reaches, resolved when the tier is due (so the roster decides
who is on duty *then*):

- ``family``: the contacts of the residents of the alert's household;
- ``visitors``: the registered visitors looking after that household (community workers …);
- ``on_duty`` or ``on_duty:<role>``: staff on the roster now, covering the alert's building;
- ``role:<role>``: every staff member of that role covering the building, on duty or not;
- a staff or visitor id: that person.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, SecretStr, Tag, field_validator

from edge_rules.rules import Schedule
from edge_rules.schedule import parse_duration
from gateway.site.validation import ID_PATTERN, URL_PATTERN

Duration = Annotated[float, BeforeValidator(parse_duration)]
_ID = ID_PATTERN
_TARGET = r"^(family|visitors|on_duty(:[a-z_]+)?|role:[a-z_]+|[A-Za-z0-9][A-Za-z0-9_.\-]*)$"


def _repeat(value: object) -> float | None:
    if value in ("once", 0, "0", None):
        return None
    return parse_duration(value)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NotifySettings(_Model):
    # A notification a channel could not deliver is retried with back-off (seconds) between these.
    backoff_initial: Annotated[float, Field(gt=0, le=3600)] = 5.0
    backoff_max: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    # At most this many pages per person per channel in an hour about maintenance and
    # informational alerts; the rest are summarised. Alarm-class alerts (the packs' ``alarm =
    # true``) are never capped and do not use up this budget (docs/alerts.md, paging policy).
    cap_per_hour: Annotated[int, Field(ge=1, le=1000)] = 12
    # An alert that comes back after quiet (a "repeated" transition) pages again at most this often.
    renotify_interval: Duration = 1800.0
    # Storms: alarm pages to the same people on one channel within this many seconds of the
    # first go out together in one message at its end (0: each alone). Never dropped.
    group_window: Annotated[float, Field(ge=0, le=30)] = 5.0
    # More open, unacknowledged alarms than this and a new alarm pages its ladder's next tier at
    # once too: one person on duty cannot handle them all.
    storm_open_alarms: Annotated[int, Field(ge=1, le=1000)] = 5
    # Shown in every page: how the person who gets it acknowledges, from where they are (never a
    # command line: property staff have none). {id} is the alert id (every page also shows it).
    ack_hint_zh: str = "请尽快处置，并告知值班室确认"
    ack_hint_en: str = "Act now, and tell the duty room to acknowledge it"
    # Removed: the shared-token HTTP API is now the console's JSON API ([console], per-integration
    # tokens: docs/console.md). Kept as a key only to say so instead of "unknown key".
    api: dict[str, Any] | None = None
    # When a channel cannot deliver an alert of this severity or higher (1 = 一级) for
    # ``fallback_after``, the same message also goes out on ``fallback`` (SMS when the uplink
    # is down). The first channel keeps trying too.
    fallback: str | None = None
    fallback_after: Duration = 60.0
    fallback_severity: Annotated[int, Field(ge=1, le=4)] = 2

    @field_validator("api")
    @classmethod
    def _api_moved(cls, value: dict[str, Any] | None) -> None:
        if value is not None:
            raise ValueError(
                "no [notify.api]: the alert API moved to the console — set [console] enabled = true and "
                "give each integration its own token with `sensegate tokens create` (docs/console.md)"
            )
        return None


class Shift(_Model):
    """One person on duty (值班) in a daily window; ``end`` not after ``start`` crosses midnight."""

    person: str  # a staff id
    start: str = "00:00"
    end: str = "24:00"
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None

    def schedule(self) -> Schedule:
        return Schedule(start=self.start, end=self.end, days=self.days)


class Tier(_Model):
    after: Duration = 0.0  # since the alert was raised: not acknowledged by then → this tier
    to: Annotated[list[Annotated[str, Field(pattern=_TARGET)]], Field(min_length=1)]
    channels: Annotated[list[str], Field(min_length=1)]


class Ladder(_Model):
    """分级响应: tiers notified in turn until someone acknowledges; the top tier repeats."""

    id: Annotated[str, Field(pattern=_ID)]
    tiers: Annotated[list[Tier], Field(min_length=1)]
    # The top tier again every … until acknowledged; "once" (or 0): no repeat.
    repeat: Annotated[float | None, BeforeValidator(_repeat)] = 600.0
    # Messages due in this window wait for its end (maintenance tickets at night); never dropped.
    quiet: Schedule | None = None


class Route(_Model):
    """Which ladder an alert climbs: the first route whose every given condition matches."""

    ladder: str
    severity: list[Literal[1, 2, 3, 4]] | None = None
    rules: list[str] | None = None  # rule ids, shell patterns allowed: "fall_*"
    packs: list[str] | None = None  # scenario packs: "elderly_care", "smart_community"
    buildings: list[str] | None = None


DINGTALK_URL = "https://oapi.dingtalk.com/robot/send"


WECOM_URL = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"


class WebhookChannelSettings(BaseModel):
    """``[[channels]] type = "webhook"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["webhook"]
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    url: Annotated[str, Field(pattern=URL_PATTERN)]
    secret: Annotated[SecretStr, Field(min_length=16)]  # HMAC key; "env:NAME" / "file:PATH" in config
    timeout: Annotated[float, Field(gt=0, le=600)] = 10.0


class WeComChannelSettings(BaseModel):
    """``[[channels]] type = "wecom"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["wecom"]
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    token: Annotated[SecretStr, Field(min_length=1)]  # the key=… of the robot's webhook URL
    url: Annotated[str, Field(pattern=URL_PATTERN)] = WECOM_URL  # without ?key=; changed only for tests
    timeout: Annotated[float, Field(gt=0, le=600)] = 10.0
    mention: bool = True  # a following text message that @-mentions recipients by phone


class DingTalkChannelSettings(BaseModel):
    """``[[channels]] type = "dingtalk"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["dingtalk"]
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    token: Annotated[SecretStr, Field(min_length=1)]  # the access_token=… of the robot's webhook URL
    secret: Annotated[SecretStr, Field(min_length=1)]  # the 加签 secret, "SEC…"
    url: Annotated[str, Field(pattern=URL_PATTERN)] = DINGTALK_URL  # without the query; changed only for tests
    timeout: Annotated[float, Field(gt=0, le=600)] = 10.0


class SmsSettings(BaseModel):
    """``[[channels]]`` entry for a GSM modem (``type = "sms"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["sms"]
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    # The modem's port: a stable /dev/serial/by-id/… link (an EC20 has several: use the AT one).
    port: Annotated[str, Field(min_length=1)]
    baudrate: Literal[9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600] = 115200
    # The SIM's PIN, if it has one (digits; "env:NAME" / "file:PATH" are resolved by the config
    # loader). Entered once per start; never retried after a refusal.
    pin: Annotated[str, Field(pattern=r"^([0-9]{4,8})?$")] = ""
    timeout: Annotated[float, Field(gt=0, le=120)] = 10.0  # seconds for one AT command's answer
    send_timeout: Annotated[float, Field(gt=0, le=300)] = 60.0  # seconds for the network to take a part
    max_parts: Annotated[int, Field(ge=1, le=10)] = 4  # longer texts are cut with "…"
    # Read what the SIM receives: a reply "1 <code>" from a known phone acknowledges the alert
    # (gateway/alerts/replies.py), and pages say "回复 1 <code> 确认". Every received message is
    # deleted once read, so the SIM never fills.
    replies: bool = True
    reply_poll: Annotated[float, Field(ge=1, le=300)] = 5.0  # seconds between reads (AT+CMGL)

    @field_validator("pin", mode="before")
    @classmethod
    def _no_unresolved_secret(cls, value: Any) -> Any:
        # Resolved by the site config loader; a PIN still "env:…" here (settings built some other
        # way) would be typed into the SIM: refuse it.
        if isinstance(value, str) and value.startswith(("env:", "file:")):
            raise ValueError("a PIN of digits (env:/file: unresolved)")
        return value


_CHANNEL_TYPES = "a channel type: mqtt, webhook, wecom, dingtalk or sms"


def _channel_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"channel:{kind}" if kind in ("mqtt", "webhook", "wecom", "dingtalk", "sms") else None


class MqttChannelSettings(_Model):
    """Notifications published on the gateway's broker (``<prefix>/notifications/<id>``, QoS 1),
    for an app or a bridge of the community's own."""

    type: Literal["mqtt"]
    id: Annotated[str, Field(pattern=_ID)]
    topic: str = ""  # default: <topic prefix>/notifications/<id>


# Every channel type's settings; the runtime builds the channel from them (gateway.alerts.channels).
# Tagged "channel:<type>" so that config errors can drop the tag from the field path without
# mistaking it for the site's own [mqtt] table.
ChannelSettings = Annotated[
    Annotated[MqttChannelSettings, Tag("channel:mqtt")]
    | Annotated[WebhookChannelSettings, Tag("channel:webhook")]
    | Annotated[WeComChannelSettings, Tag("channel:wecom")]
    | Annotated[DingTalkChannelSettings, Tag("channel:dingtalk")]
    | Annotated[SmsSettings, Tag("channel:sms")],
    Discriminator(_channel_tag, custom_error_type="channel_type", custom_error_message=_CHANNEL_TYPES),
]
CHANNEL_TAGS = frozenset({f"channel:{kind}" for kind in ("mqtt", "webhook", "wecom", "dingtalk", "sms")})
