"""Where a field is in a TOML file, and how to name a list item: for config errors.

``tomllib`` gives no positions, so ``key_lines`` scans the source text for table headers
(``[mqtt]``, the n-th ``[[devices]]``) and ``key =`` lines, and maps each field path it sees
to its line. ``line_of`` answers with the deepest part of a path that is written in the file:
the key's own line, or the line of the inline table or header it sits in. A leaf module.

    lines = key_lines(text)
    line_of(lines, "devices[2].mqtt.friendly_name")   # the line of `mqtt = { … }` in the 3rd [[devices]]
"""

from __future__ import annotations

import re
from collections.abc import Mapping

Parts = tuple[str | int, ...]

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'[^\']*\''
_KEY_PART = re.compile(rf"{_BARE}|{_QUOTED}")
_KEY = re.compile(rf"^\s*((?:{_BARE}|{_QUOTED})(?:\s*\.\s*(?:{_BARE}|{_QUOTED}))*)\s*=(.*)$")
_HEADER = re.compile(rf"^\s*(\[\[?)\s*((?:{_BARE}|{_QUOTED})(?:\s*\.\s*(?:{_BARE}|{_QUOTED}))*)\s*(\]\]?)\s*(?:#.*)?$")
_STRINGS = re.compile(rf"{_QUOTED}")
_PATH = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")


def key_lines(text: str) -> dict[Parts, int]:
    """Field path (keys and list indices) → 1-based line, for what the text writes out."""
    lines: dict[Parts, int] = {}
    arrays: dict[tuple[str, ...], int] = {}  # an array of tables by its header's names → current index
    counts: dict[Parts, int] = {}  # an array of tables by its concrete path → elements so far
    table: Parts = ()
    depth = 0  # open brackets / braces of a value that goes on over lines
    in_array: Parts | None = None  # the key of a multi-line array, counting its inline tables
    element = 0
    quote = ""  # the delimiter of a multi-line string we are in
    for number, line in enumerate(text.splitlines(), start=1):
        if quote:
            if quote in line:
                quote = ""
            continue
        if depth:
            if in_array is not None and depth == 1 and line.lstrip().startswith("{"):
                lines.setdefault((*in_array, element), number)
                element += 1
            depth, quote = _scan(line, depth)
            continue
        header = _HEADER.match(line)
        if header:
            names = tuple(_unquote(p) for p in _KEY_PART.findall(header.group(2)))
            table = _concrete(names, arrays, exclude_last=header.group(1) == "[[")
            if header.group(1) == "[[":
                index = counts.get(table, 0)
                counts[table] = index + 1
                arrays[names] = index
                lines.setdefault(table, number)
                table = (*table, index)
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            parts = tuple(_unquote(p) for p in _KEY_PART.findall(key.group(1)))
            for k in range(1, len(parts) + 1):
                lines.setdefault((*table, *parts[:k]), number)
            depth, quote = _scan(key.group(2), 0)
            in_array, element = ((*table, *parts), 0) if depth and key.group(2).lstrip().startswith("[") else (None, 0)
    return lines


def line_of(lines: Mapping[Parts, int], path: str) -> int | None:
    """The line of ``path`` (``devices[2].household``), or of the nearest enclosing part that
    the file writes out; None if nothing of it is there (a missing section)."""
    parts = path_parts(path)
    for k in range(len(parts), 0, -1):
        if parts[:k] in lines:
            return lines[parts[:k]]
    return None


def path_parts(path: str) -> Parts:
    """``devices[3].mqtt.friendly_name`` → ``("devices", 3, "mqtt", "friendly_name")``."""
    return tuple(int(index) if index else key for index, key in _PATH.findall(path))


def _concrete(names: tuple[str, ...], arrays: Mapping[tuple[str, ...], int], exclude_last: bool) -> Parts:
    """A header's names as a path, with the current index of every enclosing array of tables."""
    out: list[str | int] = []
    for k, name in enumerate(names, start=1):
        out.append(name)
        if names[:k] in arrays and not (exclude_last and k == len(names)):
            out.append(arrays[names[:k]])
    return tuple(out)


def _scan(value: str, depth: int) -> tuple[int, str]:
    """Bracket depth after ``value`` (strings and comments left out), and the delimiter of a
    multi-line string it opens but does not close."""
    for delimiter in ('"""', "'''"):
        if value.count(delimiter) % 2:
            return depth, delimiter
    bare = _STRINGS.sub("", value).split("#", 1)[0]
    return depth + bare.count("[") + bare.count("{") - bare.count("]") - bare.count("}"), ""


def _unquote(part: str) -> str:
    return part[1:-1] if part[:1] in "\"'" and len(part) > 1 else part
