"""The site pages' JSON (``gateway.web.pages``) described for ``/api/openapi.json``: merged into
``gateway.web.openapi`` so the description names every API route the app has."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_NOT_FOUND = {
    "description": "Not found, or not in this identity's scope (as on the board)",
    "content": {"application/json": {"schema": _ERROR}},
}
_BAD = {"description": "A filter that cannot be read", "content": {"application/json": {"schema": _ERROR}}}
_COMMON = {"401": {"description": "No valid session or API token", "content": {"application/json": {"schema": _ERROR}}}}


def _ok(description: str, properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": schema or {"type": "string"}}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


_ARRAY = {"type": "array", "items": {"type": "object"}}
_HEALTH = {
    "type": "object",
    "description": "Device counts: devices, online, and per problem (offline, silent, tamper, fault, battery, weak)",
    "additionalProperties": {"type": "integer"},
}
_DEVICE = {
    "type": "object",
    "description": (
        "A configured device and its summary (device_state): last_seen, online, battery, battery_low, "
        "link_quality (LQI), tamper, fault, state, activity_at (epoch seconds), problems"
    ),
}
_PAGE = _query("page", "Page number, from 1", {"type": "integer", "minimum": 1})
_MONTH = _query("month", "A month such as 2026-11 (local time; default: this month)")

PAGE_PATHS: dict[str, Any] = {
    "/api/v1/site": {
        "get": {
            "summary": "The site overview: every building in scope with device health and open alerts",
            "responses": {
                "200": _ok(
                    "The site",
                    {
                        "buildings": _ARRAY,
                        "health": _HEALTH,
                        "households": {"type": "integer"},
                        "open_alerts": {"type": "integer"},
                        "sitewide_alerts": {"type": "integer"},
                        "alerts": _ARRAY,
                    },
                ),
                **_COMMON,
            },
        }
    },
    "/api/v1/buildings/{building_id}": {
        "get": {
            "summary": "One building: devices per unit and household, open alerts per unit, public areas",
            "parameters": [_path("building_id", "A building id from the site config")],
            "responses": {
                "200": _ok(
                    "The building",
                    {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "units": _ARRAY,
                        "public": {"type": "array", "items": _DEVICE},
                        "public_alerts": _ARRAY,
                        "health": _HEALTH,
                        "open_alerts": {"type": "integer"},
                    },
                ),
                "404": _NOT_FOUND,
                **_COMMON,
            },
        }
    },
    "/api/v1/households/{household_id}": {
        "get": {
            "summary": "A household card: residents, contacts, visitors, devices, last activity, alerts, visits",
            "parameters": [_path("household_id", "A household id from the site config, e.g. 3-2-502")],
            "responses": {
                "200": _ok(
                    "The household",
                    {
                        "id": {"type": "string"},
                        "label": {"type": "string"},
                        "residents": _ARRAY,
                        "visitors": _ARRAY,
                        "devices": {"type": "array", "items": _DEVICE},
                        "health": _HEALTH,
                        "last_activity": {"type": ["number", "null"]},
                        "open_alerts": _ARRAY,
                        "past_alerts": _ARRAY,
                        "visits": _ARRAY,
                    },
                ),
                "404": _NOT_FOUND,
                **_COMMON,
            },
        }
    },
    "/api/v1/devices": {
        "get": {
            "summary": "Devices in scope, filtered; 100 a page",
            "parameters": [
                _query(
                    "problem",
                    "any, or one problem",
                    {"type": "string", "enum": ["any", "offline", "silent", "tamper", "fault", "battery", "weak"]},
                ),
                _query("building", "A building id"),
                _query("family", "door, fall, smoke, sos, gas, water, presence"),
                _query("q", "Text in the id, room, place or model"),
                _PAGE,
            ],
            "responses": {
                "200": _ok(
                    "The devices",
                    {
                        "total": {"type": "integer"},
                        "page": {"type": "integer"},
                        "per_page": {"type": "integer"},
                        "more": {"type": "boolean"},
                        "devices": {"type": "array", "items": _DEVICE},
                    },
                ),
                "400": _BAD,
                **_COMMON,
            },
        }
    },
    "/api/v1/history": {
        "get": {
            "summary": "Past and open alerts in scope, newest first; 50 a page",
            "parameters": [
                _query("from", "Raised on or after this local date (YYYY-MM-DD)"),
                _query("to", "Raised on or before this local date (YYYY-MM-DD)"),
                _query("building", "A building id"),
                _query("rule", "A rule id"),
                _query("severity", "1 (一级) to 4 (四级)", {"type": "integer", "minimum": 1, "maximum": 4}),
                _query("person", "Acknowledged or resolved by this id (a staff or visitor id, token:<name>)"),
                _query("state", "open or resolved", {"type": "string", "enum": ["open", "resolved"]}),
                _query("q", "Text in the message, or the start of the alert id"),
                _PAGE,
            ],
            "responses": {
                "200": _ok(
                    "The alerts",
                    {"alerts": _ARRAY, "page": {"type": "integer"}, "more": {"type": "boolean"}},
                ),
                "400": _BAD,
                **_COMMON,
            },
        }
    },
    "/api/v1/visits": {
        "get": {
            "summary": "Visits (探访) of a month in scope: the rate (月探访率), per visitor, per elder, the records",
            "parameters": [_MONTH],
            "responses": {
                "200": _ok(
                    "The month",
                    {
                        "month": {"type": "string"},
                        "due": {"type": "integer"},
                        "visited": {"type": "integer"},
                        "rate": {"type": ["number", "null"], "description": "visited ÷ due (the target is 1)"},
                        "workers": _ARRAY,
                        "elders": _ARRAY,
                        "records": _ARRAY,
                    },
                ),
                "400": _BAD,
                **_COMMON,
            },
        }
    },
}
