"""Edge rule engine and scenario packs (智慧社区, 独居老人探访).

Rules are data (TOML, validated by pydantic) built from six primitives — match, absence,
count, sequence, held, correlation. The ``Engine`` is pure and deterministic: events and
``advance(now)`` in, ``Decision`` values (raise / update / resolve) out; all its state is
exported as JSON-able entries (``dirty()``) for the runtime to save with the alerts and the
event cursor, and restored with ``Engine(..., state=entries)``. See edge_rules/README.md.
"""

from edge_rules.context import Context, DeviceInfo, ResidentInfo
from edge_rules.engine import Decision, Engine, Subject
from edge_rules.rules import (
    AnyRule,
    RuleSet,
    Settings,
    available_packs,
    load_rules,
    pack_path,
    parse_rule_file,
)

__all__ = [
    "AnyRule",
    "Context",
    "Decision",
    "DeviceInfo",
    "Engine",
    "ResidentInfo",
    "RuleSet",
    "Settings",
    "Subject",
    "available_packs",
    "load_rules",
    "pack_path",
    "parse_rule_file",
]
