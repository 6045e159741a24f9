"""Which rules an event can trigger, so the engine evaluates only those.

A rule can act on an event only through one of its conditions (``Rule.conditions()``: when,
first, then, start, end, a list ``auto_resolve``): when none of them can match, evaluating
the rule decides nothing and changes no state. A condition's tests fall in three parts:

- the event's kind and family (``Condition.event_match``) — known from the event;
- the device's place and family, household, room (``Condition.static_match``) — known once
  per device, since the context does not change while an engine runs;
- the event's values and the time of day (``where``, ``schedule``) — only at evaluation.

Each condition of each rule gets one bit. Per (kind, family) the index keeps the bits of the
conditions whose first part passes; per device the engine keeps the bits whose second part
passes (for the rules that have a subject through the device). The rules to evaluate for an
event are those with a bit in both masks, in rule order — every rule that could match, and
the same decisions as evaluating them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from edge_rules.context import DeviceInfo
from edge_rules.rules import AnyRule, Condition
from gateway.models import Family, Kind


class RuleIndex:
    """Condition bits of a rule sequence, with the two masks and the rules a mask selects."""

    def __init__(self, rules: Sequence[AnyRule]) -> None:
        self.conditions: tuple[tuple[int, Condition], ...] = tuple(
            (pos, cond) for pos, rule in enumerate(rules) for cond in rule.conditions()
        )
        # Per rule, its condition fields (when, first, …) with each condition's bit.
        fields: list[dict[str, tuple[tuple[int, Condition], ...]]] = []
        bit = 0
        for rule in rules:
            named = {}
            for name, group in rule.condition_fields():
                named[name] = tuple((1 << (bit + i), cond) for i, cond in enumerate(group))
                bit += len(group)
            fields.append(named)
        self.fields: tuple[dict[str, tuple[tuple[int, Condition], ...]], ...] = tuple(fields)
        bits = [0] * len(rules)
        any_device = [0] * len(rules)  # conditions every device meets
        tested: list[list[tuple[int, Condition]]] = [[] for _ in rules]  # the others
        for bit, (pos, cond) in enumerate(self.conditions):
            bits[pos] |= 1 << bit
            if cond.any_device:
                any_device[pos] |= 1 << bit
            else:
                tested[pos].append((1 << bit, cond))
        self.rule_bits: tuple[int, ...] = tuple(bits)
        self._any_device = tuple(any_device)
        self._tested = tuple(tuple(x) for x in tested)
        self._by_event: dict[tuple[Kind, Family], int] = {}
        self._rules: dict[int, tuple[int, ...]] = {}

    def event_mask(self, kind: Kind, family: Family) -> int:
        """Bits of the conditions an event of this kind and family can meet (cached)."""
        mask = self._by_event.get((kind, family))
        if mask is None:
            mask = 0
            for bit, (_, cond) in enumerate(self.conditions):
                if cond.event_match(kind, family):
                    mask |= 1 << bit
            self._by_event[(kind, family)] = mask
        return mask

    def device_mask(self, info: DeviceInfo, rules: Iterable[int]) -> int:
        """Bits of the conditions of ``rules`` (positions) that this device can meet."""
        mask = 0
        for pos in rules:
            mask |= self._any_device[pos]
            for bit, cond in self._tested[pos]:
                if cond.static_match(info):
                    mask |= bit
        return mask

    def rules(self, mask: int) -> tuple[int, ...]:
        """Positions of the rules with a condition in ``mask``, in rule order (cached)."""
        found = self._rules.get(mask)
        if found is None:
            found = tuple(pos for pos, bits in enumerate(self.rule_bits) if bits & mask)
            self._rules[mask] = found
        return found
