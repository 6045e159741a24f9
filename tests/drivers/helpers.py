"""Shared by the driver tests: golden files, expected observations, hypothesis strategies."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from gateway.errors import PayloadError
from gateway.models import Kind, Observation

TESTDATA = Path(__file__).parent / "testdata"

# Every reason a codec may raise; a fuzz failure with another tag means a new, undocumented one.
REASONS = frozenset(
    {
        "bad_json",
        "bad_time",
        "bad_utf8",
        "bad_value",
        "empty",
        "missing_field",
        "not_encodable",
        "not_object",
        "too_large",
        "unknown_action",
        "unknown_code",
        "unknown_field",
        "unknown_kind",
        "unknown_model",
        "unknown_state",
        "unsupported_version",
        "wrong_type",
    }
)


def golden(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((TESTDATA / f"{name}.json").read_text(encoding="utf-8"))
    return data


def cases(name: str, section: str) -> list[Any]:
    """pytest params for one section of a golden file, with the case names as ids."""
    import pytest

    return [pytest.param(case, id=case["name"]) for case in golden(name)[section]]


def expected(case: dict[str, Any]) -> list[Observation]:
    return [Observation(Kind(item["kind"]), item.get("values", {}), item.get("device_time")) for item in case["expect"]]


def only_payload_errors(call: Callable[[], object]) -> None:
    """Run ``call``; it may succeed or raise PayloadError with a known reason, nothing else."""
    try:
        call()
    except PayloadError as exc:
        assert exc.reason in REASONS, f"undocumented reason {exc.reason!r}: {exc}"
        assert str(exc), "an error must say what was wrong"


# --------------------------------------------------------------------------------------------
# Strategies

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**400), 10**400)  # JSON allows them; float() of one overflows
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


def as_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def fields_with(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects whose keys are the fields a decoder looks at, with any JSON value at all."""
    return st.dictionaries(st.sampled_from(names), json_values, max_size=len(names))


kinds = st.sampled_from(list(Kind))
kind_values = kinds.map(str)

# Device times inside the window every codec accepts (2000 ≤ t < 2100).
MIN_T, MAX_T = 946_684_800, 4_102_444_800
whole_seconds = st.integers(MIN_T, MAX_T - 1).map(float)
micro_times = st.integers(MIN_T * 1_000_000, MAX_T * 1_000_000 - 1).map(lambda us: us / 1_000_000)


def finite(value: float) -> bool:
    return math.isfinite(value)
