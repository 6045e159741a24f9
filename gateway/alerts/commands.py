"""Acknowledge and resolve alerts from where people are: the CLI, MQTT and the console (its pages
and its JSON API) all become the same command, applied by the running gateway — the one writer
of alert state.

A command is ``{"action": "ack" | "resolve", "alert": "<id>", "by": "<person>", "note": "…",
"request_id": "…"}`` (``via`` is set by the path it came in on). The CLI and MQTT queue it in
the store (durable before the MQTT PUBACK); the gateway applies queued commands within a second
and stores the result, which the CLI waits for and MQTT gets on
``<prefix>/alerts/commands/result``. The console runs on the gateway's event loop and applies
its commands at once, with ``by`` the signed-in person or ``token:<name>`` for an API token
(gateway.web.console). See docs/alerts.md.

``by`` must be a person the site config names (gateway.site.people: a staff or visitor id, or
``contact:<resident id>:<n>``); the alert path refuses anyone else, and the result carries the
ids closest to what was typed, so a typo does not stop an escalation in the name of nobody. A
claim (the CLI) cannot name an API token: ``token:<name>`` is for a sender that proved it.

**Over MQTT a command must be signed** (issue 13): any client of the broker could otherwise
stop an alarm — and the devices are clients. An integration gets a key with ``sensegate tokens
create NAME --role ROLE --mqtt`` and adds ``key_id`` (NAME), ``ts`` (epoch seconds, an
integer), ``nonce`` (16–64 of ``A-Za-z0-9_-``, never used twice) and ``mac``: the lowercase hex
HMAC-SHA256, keyed by the key's UTF-8 bytes, of the command's canonical JSON — every field but
``mac``, keys sorted, no white space, UTF-8 as it is (``canonical``). The gateway takes it once
(``verify_command``): the key known and not revoked, the MAC right, ``ts`` within ±60 s of its
clock, the nonce not seen with that key (nonces are kept in the store, so a restart does not
reopen a replay). The actor is then ``token:<NAME>`` (via ``mqtt``); a ``by`` is refused, as on
the console's API, and the alert is named by its full id (no prefix). docs/interfaces.md has a
worked example and a test vector.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from drivers.native import load_json
from gateway.alerts.path import TOKEN_ACTOR, AlertPath, LifecycleError, UnknownPersonError
from gateway.errors import PayloadError, UnauthenticatedError
from gateway.models import Alert
from gateway.store import ApiToken

ACTIONS = ("ack", "resolve")
MAX_NOTE = 500
MAX_SKEW = 60.0  # seconds a signed command's ts may be off the gateway's clock, either way
SIGNATURE = ("key_id", "ts", "nonce", "mac")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_ALERT_ID = re.compile(r"[0-9a-f]{12}")  # a full alert id (gateway.alerts.path._alert_id)

# A key by name: (the key, its token row), or None.
KeyLookup = Callable[[str], tuple[str, ApiToken] | None]


def canonical(command: Mapping[str, Any]) -> bytes:
    """The bytes a command's MAC is computed over: every field but ``mac``, keys sorted, no
    white space, non-ASCII as it is, UTF-8 — what ``JSON.stringify`` gives for the same object
    with its keys sorted."""
    body = {k: v for k, v in command.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def command_mac(key: str, command: Mapping[str, Any]) -> str:
    """HMAC-SHA256 of ``canonical(command)`` keyed by the key's UTF-8 bytes, lowercase hex."""
    return hmac.new(key.encode("utf-8"), canonical(command), hashlib.sha256).hexdigest()


def sign_command(
    command: Mapping[str, Any], key_id: str, key: str, ts: int, nonce: str | None = None
) -> dict[str, Any]:
    """``command`` with ``key_id``, ``ts``, ``nonce`` (random if not given) and its ``mac``: what
    an integration publishes (Python; docs/interfaces.md shows it in a few other ways)."""
    signed = {**command, "key_id": key_id, "ts": int(ts), "nonce": nonce or secrets.token_hex(16)}
    return {**signed, "mac": command_mac(key, signed)}


def verify_command(
    payload: bytes | str,
    now: float,
    key_of: KeyLookup,
    nonce_used: Callable[[str, str], bool],
) -> tuple[dict[str, Any], tuple[str, str, float]]:
    """A signed command from MQTT, proved and checked: the command to queue, acting as
    ``token:<key_id>`` via ``mqtt``, and ``(key_id, nonce, ts)`` to remember with it. Raises
    ``UnauthenticatedError`` for a sender not proved, ``PayloadError("bad_command")`` for a
    payload that is no command or a proved command that is wrong."""
    data = _object(payload)
    key_id, ts, nonce, mac = (data.get(f) for f in SIGNATURE)
    if not isinstance(key_id, str) or not key_id or not isinstance(mac, str) or not isinstance(nonce, str):
        raise UnauthenticatedError(
            "unsigned", "a command over MQTT must be signed: key_id, ts, nonce and mac (docs/interfaces.md)"
        )
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise UnauthenticatedError("unsigned", "ts must be epoch seconds, an integer")
    if not _NONCE.fullmatch(nonce):
        raise UnauthenticatedError("unsigned", "nonce must be 16 to 64 of A-Z a-z 0-9 _ -")
    found = key_of(key_id)
    if found is None:
        raise UnauthenticatedError("unknown_key", f"no MQTT key named {key_id[:64]!r}")
    key, token = found
    if not token.active:
        raise UnauthenticatedError("revoked", f"the MQTT key {key_id!r} is revoked")
    if not hmac.compare_digest(mac.encode("utf-8"), command_mac(key, data).encode("utf-8")):
        raise UnauthenticatedError(
            "bad_mac", "mac is not the HMAC-SHA256 of the command's canonical JSON (docs/interfaces.md)"
        )
    if abs(ts - now) > MAX_SKEW:
        raise UnauthenticatedError(
            "clock", f"ts is {ts - now:+.0f} s from the gateway's clock; at most ±{MAX_SKEW:.0f} s is taken"
        )
    if nonce_used(key_id, nonce):
        raise UnauthenticatedError("replayed", "this nonce was used already: a signed command is taken once")
    if "by" in data:
        raise PayloadError("bad_command", f"no by: a signed command acts as {TOKEN_ACTOR}{key_id}")
    alert = data.get("alert")
    if not isinstance(alert, str) or not _ALERT_ID.fullmatch(alert):
        raise PayloadError("bad_command", "alert must be a full alert id (12 hex digits) over MQTT, not a prefix")
    return _body(data, by=f"{TOKEN_ACTOR}{key_id}", via="mqtt"), (key_id, nonce, float(ts))


def refusal(payload: bytes | str, exc: PayloadError) -> dict[str, Any] | None:
    """The result for a command refused before it was queued, in the form of ``apply_command``'s
    (``reason`` ``unauthenticated`` or ``bad_command``); None for a payload that is not even a
    JSON object (nobody to answer)."""
    try:
        data = load_json(payload.encode() if isinstance(payload, str) else payload, "command")
    except PayloadError:
        return None
    if not isinstance(data, dict):
        return None
    action, request_id = data.get("action"), data.get("request_id")
    return {
        "action": action if action in ACTIONS else None,
        "request_id": request_id[:64] if isinstance(request_id, str) else None,
        "ok": False,
        "error": str(exc),
        "reason": exc.reason,
    }


def _object(payload: bytes | str) -> dict[str, Any]:
    try:
        data = load_json(payload.encode() if isinstance(payload, str) else payload, "command")
    except PayloadError as exc:  # size, UTF-8, strict JSON, no absurd nesting
        raise PayloadError("bad_command", f"command is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PayloadError("bad_command", "command must be a JSON object")
    return data


def _body(data: Mapping[str, Any], *, by: str, via: str) -> dict[str, Any]:
    action = data.get("action")
    if action not in ACTIONS:
        raise PayloadError("bad_command", f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    note = data.get("note", "")
    if not isinstance(note, str):
        raise PayloadError("bad_command", "note must be text")
    out: dict[str, Any] = {"action": action, "alert": data["alert"], "by": by, "note": note[:MAX_NOTE], "via": via}
    if isinstance(data.get("request_id"), str):
        out["request_id"] = data["request_id"][:64]
    return out


def apply_command(
    alerts: AlertPath,
    command: dict[str, Any],
    *,
    authenticated: bool = False,
    may_act: Callable[[Alert], bool] | None = None,
) -> dict[str, Any]:
    """Apply one checked command; the result says what happened (never raises on bad ids or
    unknown persons): ``ok``, and on failure ``error`` (words) and ``reason`` (a stable tag,
    ``LifecycleError``; ``forbidden`` when ``may_act`` says no), with ``suggestions`` for an
    unknown person. ``authenticated``: who ``by`` is was proved (a console session, an API token,
    a signed MQTT command); without it ``by`` is a claim, and a claim to be a token is refused.
    ``may_act``: what the identity's role allows (an installer's token: maintenance tickets)."""
    action, by, via, note = command["action"], command["by"], command.get("via", ""), command.get("note", "")
    result: dict[str, Any] = {"action": action, "request_id": command.get("request_id")}
    try:
        if by.startswith(TOKEN_ACTOR) and not authenticated:
            raise UnknownPersonError(by, [])
        if may_act is not None:
            alert = alerts.find(command["alert"])
            if not may_act(alert):
                raise LifecycleError("forbidden", f"{by} may not {action} alert {alert.id} (its role)")
        if action == "ack":
            t = alerts.acknowledge(command["alert"], by, via, note)
        else:
            t = alerts.resolve(command["alert"], by, via, note)
    except LifecycleError as exc:
        result.update(ok=False, error=str(exc), reason=exc.reason)
        if isinstance(exc, UnknownPersonError):
            result["suggestions"] = exc.suggestions
        return result
    result.update(ok=True, alert=t.alert.to_dict(), already=dict(t.detail).get("already", False))
    return result
