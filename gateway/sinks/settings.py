"""Checks every HTTP sink makes of its settings when it is built."""

from __future__ import annotations

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
