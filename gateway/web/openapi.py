"""The console's JSON API described (OpenAPI 3.1), served at ``/api/openapi.json``. Written by
hand: it is small, and the words are for the people who integrate with it. A test checks that it
names exactly the API routes the app has."""

from __future__ import annotations

from typing import Any

from gateway.web.openapi_pages import PAGE_PATHS

_ERROR = {"$ref": "#/components/schemas/Error"}
_RESULT = {"$ref": "#/components/schemas/CommandResult"}


def _answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ALERT_ID = {
    "name": "alert_id",
    "in": "path",
    "required": True,
    "description": "An alert id, or a unique prefix of at least 4 characters",
    "schema": {"type": "string", "maxLength": 64},
}

_COMMON = {
    "401": _answer("No valid session or API token", _ERROR),
}

_ACT_ERRORS = {
    **_COMMON,
    "400": _answer("The body is not a JSON object, or names `by` (the actor is who signed in)", _ERROR),
    "403": _answer("A session without its X-CSRF-Token, or a role that may not act on this alert", _RESULT),
    "404": _answer("No such alert, or not one this identity sees", _RESULT),
    "409": _answer("Already resolved, or an ambiguous id prefix", _RESULT),
}


def openapi(server_url: str = "") -> dict[str, Any]:
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "SenseGate console API (值班台)",
            "version": "1",
            "description": (
                "Alerts of one SenseGate gateway. Authenticate with `Authorization: Bearer <token>` "
                "(`sensegate tokens create NAME --role ROLE`) or a signed-in browser session (which also "
                "sends `X-CSRF-Token` on POST). What an identity sees and may do follows its role; "
                "acknowledgements and resolutions are recorded as the signed-in person or `token:<name>`."
            ),
        },
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            "/api/v1/alerts": {
                "get": {
                    "summary": "Open alerts this identity sees",
                    "parameters": [
                        {
                            "name": "all",
                            "in": "query",
                            "description": "1: resolved alerts too",
                            "schema": {"type": "string", "enum": ["0", "1", "true"]},
                        }
                    ],
                    "responses": {
                        "200": _answer(
                            "The alerts",
                            {
                                "type": "object",
                                "properties": {
                                    "alerts": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}}
                                },
                            },
                        ),
                        **_COMMON,
                    },
                }
            },
            "/api/v1/alerts/{alert_id}": {
                "get": {
                    "summary": "One alert, its ladder, audit trail and notifications",
                    "parameters": [_ALERT_ID],
                    "responses": {
                        "200": _answer("The alert", {"$ref": "#/components/schemas/AlertDetail"}),
                        "404": _answer("No such alert, or not one this identity sees", _ERROR),
                        **_COMMON,
                    },
                }
            },
            "/api/v1/alerts/{alert_id}/ack": {
                "post": {
                    "summary": "Acknowledge (确认): take responsibility; the escalation ladder stops",
                    "parameters": [_ALERT_ID],
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Note"}}}},
                    "responses": {"200": _answer("Acknowledged (or it already was)", _RESULT), **_ACT_ERRORS},
                }
            },
            "/api/v1/alerts/{alert_id}/resolve": {
                "post": {
                    "summary": "Resolve (处置完毕) with a note (处置记录)",
                    "parameters": [_ALERT_ID],
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Note"}}}},
                    "responses": {"200": _answer("Resolved", _RESULT), **_ACT_ERRORS},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API token"},
                "session": {"type": "apiKey", "in": "cookie", "name": "sg_session"},
            },
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
                "Note": {
                    "type": "object",
                    "properties": {"note": {"type": "string", "maxLength": 500}},
                    "additionalProperties": True,
                },
                "CommandResult": {
                    "type": "object",
                    "properties": {
                        "ok": {"type": "boolean"},
                        "action": {"type": "string", "enum": ["ack", "resolve"]},
                        "alert": {"$ref": "#/components/schemas/Alert"},
                        "already": {"type": "boolean"},
                        "error": {"type": "string"},
                        "reason": {
                            "type": "string",
                            "enum": ["no_alert", "ambiguous", "already_resolved", "unknown_person", "forbidden"],
                        },
                    },
                    "required": ["ok"],
                },
                "Alert": {
                    "type": "object",
                    "description": "As on MQTT (docs/interfaces.md), with the household and may_act",
                    "properties": {
                        "id": {"type": "string"},
                        "rule": {"type": "string"},
                        "severity": {"type": "integer", "minimum": 1, "maximum": 4},
                        "severity_zh": {"type": "string"},
                        "state": {
                            "type": "string",
                            "enum": ["raised", "notified", "escalated", "acknowledged", "resolved"],
                        },
                        "raised_at": {"type": "number", "description": "epoch seconds"},
                        "message_zh": {"type": "string"},
                        "message_en": {"type": "string"},
                        "location": {"type": "object"},
                        "acked_by": {"type": "string"},
                        "acked_via": {"type": "string"},
                        "resolved_by": {"type": "string"},
                        "resolve_note": {"type": "string"},
                        "household": {"type": "string"},
                        "may_act": {"type": "boolean"},
                    },
                    "required": ["id", "severity", "state"],
                },
                "AlertDetail": {
                    "type": "object",
                    "properties": {
                        "alert": {"$ref": "#/components/schemas/Alert"},
                        "trail": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "at": {"type": "number"},
                                    "action": {"type": "string"},
                                    "actor": {"type": "string"},
                                    "channel": {"type": "string"},
                                    "detail": {"type": "object"},
                                },
                            },
                        },
                        "notifications": {"type": "array", "items": {"type": "object"}},
                        "ladder": {"type": "object"},
                    },
                },
            },
        },
    }
    doc["paths"].update(PAGE_PATHS)  # the site pages' JSON
    if server_url:
        doc["servers"] = [{"url": server_url.rstrip("/")}]
    return doc
