"""Searching past alerts (告警记录) for the console: by time, building, rule, severity, state, the
person who acknowledged or resolved them, words in the message, and what they were about
(devices, residents). Newest first, a page at a time. And a household's latest visits.

The ``alerts`` table keeps each alert as JSON; this part adds indexes for the searches the
console makes often — by time (``raised_at``), by device and by resident (expression indexes
on the JSON), and ``visits`` by household — so a household card or a page of history reads
what it shows, not the table.
The other filters are checked on the rows the time order walks through, stopping once a page
is full (no total count: the next page is offered when there is one more row).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from gateway.models import Alert
from gateway.store.base import StoreBase
from gateway.store.visits import VisitRow, _visit

# Run after ALERTS_DDL and VISITS_DDL (store.py lists it so).
HISTORY_DDL = """
CREATE INDEX IF NOT EXISTS visits_household ON visits(household, at);
CREATE INDEX IF NOT EXISTS alerts_raised_at ON alerts(raised_at);
CREATE INDEX IF NOT EXISTS alerts_device ON alerts(json_extract(body, '$.device_id'));
CREATE INDEX IF NOT EXISTS alerts_resident ON alerts(json_extract(body, '$.resident'));
"""

_DEVICE = "json_extract(body, '$.device_id')"
_RESIDENT = "json_extract(body, '$.resident')"


@dataclass(frozen=True, slots=True)
class AlertQuery:
    """What to look for; every field left at its default matches everything."""

    since: float | None = None  # raised at or after
    until: float | None = None  # raised before
    buildings: Collection[str] | None = None  # in these buildings (None: any)
    sitewide: bool = True  # with ``buildings``: also alerts that name no building
    rule: str = ""
    severity: int | None = None
    person: str = ""  # acknowledged or resolved by (an id as the audit trail records it)
    state: str = ""  # "open", "resolved" or "" for both
    text: str = ""  # in the message (Chinese or English) or the start of the id
    devices: Collection[str] | None = None  # about one of these devices …
    residents: Collection[str] | None = None  # … or naming one of these ``resident`` values


def _where(q: AlertQuery) -> tuple[str, list[object]]:
    clauses: list[str] = []
    args: list[object] = []
    if q.since is not None:
        clauses.append("raised_at >= ?")
        args.append(q.since)
    if q.until is not None:
        clauses.append("raised_at < ?")
        args.append(q.until)
    if q.buildings is not None:
        wanted = sorted(q.buildings)
        marks = ",".join("?" * len(wanted))
        inside = f"json_extract(body, '$.location.building') IN ({marks})" if wanted else "0"
        if q.sitewide:
            inside = f"({inside} OR json_extract(body, '$.location.building') = '')"
        clauses.append(inside)
        args += wanted
    if q.rule:
        clauses.append("json_extract(body, '$.rule') = ?")
        args.append(q.rule)
    if q.severity is not None:
        clauses.append("json_extract(body, '$.severity') = ?")
        args.append(q.severity)
    if q.person:
        clauses.append("(json_extract(body, '$.acked_by') = ? OR json_extract(body, '$.resolved_by') = ?)")
        args += [q.person, q.person]
    if q.state == "open":
        clauses.append("state != 'resolved'")
    elif q.state == "resolved":
        clauses.append("state = 'resolved'")
    if q.text:
        like = "%" + q.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        clauses.append(
            "(json_extract(body, '$.message_zh') LIKE ? ESCAPE '\\' "
            "OR json_extract(body, '$.message_en') LIKE ? ESCAPE '\\' OR id LIKE ? ESCAPE '\\')"
        )
        args += [like, like, like.lstrip("%")]
    if q.devices is not None or q.residents is not None:
        about: list[str] = []
        for expr, values in ((_DEVICE, q.devices), (_RESIDENT, q.residents)):
            if values:
                chosen = sorted(set(values))
                about.append(f"{expr} IN ({','.join('?' * len(chosen))})")
                args += chosen
        clauses.append(f"({' OR '.join(about)})" if about else "0")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


class HistoryStore(StoreBase):
    def find_alerts(self, query: AlertQuery, offset: int = 0, limit: int = 50) -> list[Alert]:
        """Alerts matching ``query``, newest first: ``limit`` of them after skipping ``offset``."""
        where, args = _where(query)
        sql = f"SELECT body FROM alerts{where} ORDER BY raised_at DESC, id DESC LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, max(0, limit), max(0, offset))).fetchall()
        return [Alert.from_dict(json.loads(r[0])) for r in rows]

    def household_visits(self, household: str, limit: int = 20) -> list[VisitRow]:
        """The household's latest visit records, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, body FROM visits WHERE household = ? ORDER BY at DESC, id DESC LIMIT ?", (household, limit)
            ).fetchall()
        return [_visit(i, b) for i, b in rows]
