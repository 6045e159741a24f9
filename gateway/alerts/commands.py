"""Acknowledge and resolve alerts from where people are: the CLI, MQTT and the console (its pages
and its JSON API) all become the same command, applied by the running gateway — the one writer
of alert state.

A command is ``{"action": "ack" | "resolve", "alert": "<id or a unique prefix>", "by":
"<person>", "note": "…", "request_id": "…"}`` (``via`` is set by the path it came in on). The
CLI and MQTT queue it in the store (durable before the MQTT PUBACK); the gateway applies queued
commands within a second and stores the result, which the CLI waits for and MQTT gets on
``<prefix>/alerts/commands/result``. The console runs on the gateway's event loop and applies
its commands at once, with ``by`` the signed-in person or ``token:<name>`` for an API token
(gateway.web.console). See docs/alerts.md.

``by`` must be a person the site config names (gateway.site.people: a staff or visitor id, or
``contact:<resident id>:<n>``); the alert path refuses anyone else, and the result carries the
ids closest to what was typed, so a typo does not stop an escalation in the name of nobody. A
claim (CLI, MQTT) cannot name an API token: ``token:<name>`` is the console's to record.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.alerts.path import TOKEN_ACTOR, AlertPath, LifecycleError, UnknownPersonError
from gateway.errors import PayloadError

ACTIONS = ("ack", "resolve")
MAX_NOTE = 500


def parse_command(payload: bytes | str, via: str) -> dict[str, Any]:
    """A command from untrusted input, checked; ``PayloadError`` says what is wrong."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError("bad_command", f"command is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PayloadError("bad_command", "command must be a JSON object")
    action, alert, by = data.get("action"), data.get("alert"), data.get("by")
    if action not in ACTIONS:
        raise PayloadError("bad_command", f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    if not isinstance(alert, str) or not alert:
        raise PayloadError("bad_command", "alert must be an alert id (or a unique prefix of one)")
    if not isinstance(by, str) or not by.strip():
        raise PayloadError("bad_command", "by must name who acknowledges or resolves")
    if by.strip().startswith(TOKEN_ACTOR):
        # Only the console, having checked the token itself, acts as a token: a claim cannot.
        raise PayloadError("bad_command", "by must name a person, not an API token")
    note = data.get("note", "")
    if not isinstance(note, str):
        raise PayloadError("bad_command", "note must be text")
    out: dict[str, Any] = {"action": action, "alert": alert, "by": by.strip()[:64], "note": note[:MAX_NOTE], "via": via}
    if isinstance(data.get("request_id"), str):
        out["request_id"] = data["request_id"][:64]
    return out


def apply_command(alerts: AlertPath, command: dict[str, Any], *, authenticated: bool = False) -> dict[str, Any]:
    """Apply one checked command; the result says what happened (never raises on bad ids or
    unknown persons): ``ok``, and on failure ``error`` (words) and ``reason`` (a stable tag,
    ``LifecycleError``), with ``suggestions`` for an unknown person. ``authenticated``: the
    console proved who ``by`` is (a session or an API token); without it ``by`` is a claim, and
    a claim to be an API token is refused."""
    action, by, via, note = command["action"], command["by"], command.get("via", ""), command.get("note", "")
    result: dict[str, Any] = {"action": action, "request_id": command.get("request_id")}
    try:
        if by.startswith(TOKEN_ACTOR) and not authenticated:
            raise UnknownPersonError(by, [])
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
