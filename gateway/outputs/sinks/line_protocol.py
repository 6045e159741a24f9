"""InfluxDB line protocol, encoded here rather than by a client library, so that every name and
value the schema (``schema.py``) hands over is either written so that it reads back as it is,
or replaced by a documented stand-in — never sent in a form the server refuses, which would
dead-letter the event every time. Pure functions, no I/O.

::

    <measurement>[,<tag key>=<tag value>…] <field key>=<field value>[,…] <time, ns>

Escaping, per the InfluxDB 1.x line protocol reference ("Special characters"), checked against
a real InfluxDB 1.x by tests/sinks/test_line_protocol_influx.py:

    measurement, tag keys,      ``,`` ``=`` and space get a backslash (``\\,`` ``\\=`` ``\\ ``);
    tag values, field keys      everything else is written as it is (tabs, quotes, Chinese …)
    string field values         in double quotes; ``"`` and ``\\`` get a backslash
    float / boolean / integer   ``96.5`` (shortest repr, ``100`` for ``100.0``) / ``true`` / ``7i``

What line protocol cannot carry in a name or tag value, and what is written instead
(``storable``, applied before escaping; applying it twice changes nothing):

- a backslash right before ``,`` ``=`` space ``"`` or at the end: InfluxDB 1.x reads a
  backslash before those as an escape whatever precedes it, and has no escape for the
  backslash itself (``\\\\`` is read as two backslashes), so such a backslash cannot be written.
  It becomes ``＼`` (U+FF3C, fullwidth reverse solidus). A key ending in a backslash made the
  server refuse the point (issue 13).
- a newline ends the line: it becomes U+FFFD. (Inside a string field value it is kept.)
- a tab or NUL at the start: InfluxDB skips them as white space before the field set (so a
  first field key ``"\t"`` would be stored as ``""``): each becomes U+FFFD, in every name.
- a lone surrogate (JSON ``"\\ud800"`` decodes to one) cannot be UTF-8: it becomes U+FFFD, in
  string field values too.

Everything else — any other backslash, tab, carriage return, control characters, quotes,
``#`` — reads back unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

FieldValue = bool | int | float | str

# A backslash InfluxDB would read as an escape (or that escapes the separator after it).
_UNWRITABLE_BACKSLASH = re.compile(r'\\(?=[,= "]|\Z)')
_SURROGATE = re.compile("[\ud800-\udfff]")
_LEADING_BLANK = re.compile("^[\t\x00]+")
_ESCAPE_NAME = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_ESCAPE_STRING = str.maketrans({'"': '\\"', "\\": "\\\\"})
BACKSLASH_STAND_IN = "\uff3c"  # ＼
REPLACEMENT = "\ufffd"


def storable(text: str) -> str:
    """A measurement, tag key, tag value or field key as InfluxDB will hold it (see above)."""
    text = _SURROGATE.sub(REPLACEMENT, text).replace("\n", REPLACEMENT)
    text = _LEADING_BLANK.sub(lambda m: REPLACEMENT * len(m.group()), text)
    return _UNWRITABLE_BACKSLASH.sub(BACKSLASH_STAND_IN, text)


def storable_string(text: str) -> str:
    """A string field value as InfluxDB will hold it: only lone surrogates are replaced."""
    return _SURROGATE.sub(REPLACEMENT, text)


def name(text: str) -> str:
    """A measurement, tag key, tag value or field key as written in a line."""
    return storable(text).translate(_ESCAPE_NAME)


def field_value(value: FieldValue) -> str | None:
    """A field value as written in a line; None for what line protocol cannot carry (NaN, ±inf)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return '"' + storable_string(value).translate(_ESCAPE_STRING) + '"'


def line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], time_ns: int) -> str:
    """One point; ``""`` if no field is left (a point needs one). Tags with an empty value are
    left out (InfluxDB refuses them); tags and fields are sorted by name."""
    tag_text = "".join(f",{name(k)}={name(v)}" for k, v in sorted(tags.items()) if v)
    written = ((name(k), field_value(v)) for k, v in sorted(fields.items()))
    field_text = ",".join(f"{k}={v}" for k, v in written if v is not None)
    if not field_text:
        return ""
    return f"{name(measurement)}{tag_text} {field_text} {time_ns}"
