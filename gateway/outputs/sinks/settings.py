"""What every HTTP output shares: the checks of its settings when it is built, and reading a
refusal's reason out of the answer (InfluxDB sinks and the alert webhooks)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import urllib3


def checked_url(name: str, url: str, timeout: float, **required: str) -> str:
    """The base URL without a trailing slash; ``ValueError`` naming the sink if a setting is unusable.

    ``required`` are settings that must not be empty (``database=…``, ``bucket=…``).
    """
    parsed = urllib3.util.parse_url(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"sink {name!r}: url must be http(s)://host[:port][/prefix], got {url!r}")
    for key, value in required.items():
        if not value:
            raise ValueError(f"sink {name!r}: {key} must not be empty")
    if timeout <= 0:
        raise ValueError(f"sink {name!r}: timeout must be > 0, got {timeout}")
    return url.rstrip("/")


def reason_in_body(body: bytes, keys: Sequence[str]) -> str:
    """The server's own words: the first non-empty string under ``keys`` in a JSON object,
    else the body's text (stripped; empty for an empty body)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in keys:
            value = data.get(key)
            if isinstance(value, str) and value:
                return value
    return text
