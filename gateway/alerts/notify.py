"""Getting alerts to people (分级响应): routes, the duty roster, escalation ladders, and
delivery through the channels with durable retry. See docs/alerts.md.

The notifier listens to the alert path's transitions. A raised alert takes the first route
that matches it to a ladder; tier 0 is paged at once (or at its ``after``), and every later
tier when its time comes unless someone has acknowledged; the top tier then repeats. Each page
is a ``Notification`` per channel, queued in the store in the same transaction that moves the
ladder, under a key made of alert, severity, step and channel — so a restart mid-ladder
continues where it was and never pages a tier twice. ``run_channel`` delivers a channel's
queue: retry with capped back-off on ``RetryableSinkError``, ``rejected`` on
``RejectedBatchError``, ``sent`` once the receiver took it; every outcome goes to the alert's
audit trail.

Quiet for people, loud for alarms (the paging policy, docs/alerts.md): an update to an open
alert never pages; a repeat after quiet pages the current tier again at most every
``renotify_interval``. Alarm-class alerts (fire, smoke, gas, fall, SOS, a forced door: the
packs' ``alarm = true``) are paged at once, past every cap and quiet window; in a storm, alarm
pages to the same people on one channel within ``group_window`` seconds go out together in one
message, and more than ``storm_open_alarms`` open alarms page the ladder's next tier at once.
Everything else: a person gets at most ``cap_per_hour`` of those pages per channel an hour —
the rest wait in one summary sent when the hour frees up — and a ladder's ``quiet`` window
(maintenance at night) delays them to the window's end. Both are ``held`` in the audit trail,
with until when and why, never ``paged``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import random
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from edge_rules.schedule import Window, format_duration_zh, zone
from gateway.alerts.channels.base import Channel, Notification, Recipient
from gateway.alerts.invites import Invites
from gateway.alerts.path import TOKEN_ACTOR, AlertPath, Transition
from gateway.clock import Clock, sleep_or_wake
from gateway.errors import RejectedBatchError, RetryableSinkError
from gateway.log import LogOnce
from gateway.models import Alert, Severity
from gateway.site.alerting import Ladder, Route, Tier
from gateway.site.config import SiteConfig
from gateway.site.people import People, contact_id
from gateway.store import Escalation, LogRow, QueuedNotification, Store

log = logging.getLogger("sensegate.notify")

HOUR = 3600.0
PAGE_KINDS = frozenset({"raised", "escalated", "reminder", "repeated", "downgraded"})
GROUP_MAX = 5  # alarms listed in one grouped message, so an SMS of a few parts still holds them all
GROUP_AFTER = 2  # alarm pages to one person within a group window that go at once; more is a storm
HEALTH_INTERVAL = 600.0  # seconds between health checks of a channel that has them (the modem)
KIND_ZH = {
    "raised": "报警",
    "escalated": "升级",
    "downgraded": "降级",
    "reminder": "未确认提醒",
    "repeated": "再次报警",
    "acknowledged": "已确认",
    "resolved": "已解除",
    "summary": "汇总",
    "flapping": "反复报警",
    "grouped": "多条报警",
}
HELD_ZH = {"cap_per_hour": "超过每小时上限，并入汇总", "quiet": "免打扰时段", "grouped": "与其他报警合并"}


class Notifier:
    def __init__(
        self,
        config: SiteConfig,
        store: Store,
        clock: Clock,
        alerts: AlertPath,
        channels: Mapping[str, Channel],
        *,
        timezone: str = "Asia/Shanghai",
        rng: random.Random | None = None,
        on_change: Callable[[], None] | None = None,
        on_page: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.settings = config.notify
        self.store = store
        self.clock = clock
        self.alerts = alerts
        self.channels = dict(channels)
        self.tz = timezone
        self.rng = rng or random.Random(config.gateway.id)
        self.on_change = on_change
        self.on_page = on_page  # a line per page or held page, for the terminal
        self.ladders = {lad.id: lad for lad in config.ladders}
        self.shifts = [(s, s.schedule().window(timezone)) for s in config.roster]
        self.quiet: dict[str, Window] = {
            lad.id: lad.quiet.window(timezone) for lad in config.ladders if lad.quiet is not None
        }
        self.staff = {s.id: s for s in config.staff}
        self.visitors = {v.id: v for v in config.visitors}
        self.people = People(config)  # staff, visitors and family contacts by the id they act under
        self.invites = Invites(config, store)  # how a page says to acknowledge: link, SMS reply, hint
        self.device_household = {d.id: d.household for d in config.devices}
        self.resident_household = {r.id: r.household for r in config.residents}
        self.pack_of = alerts.rules.pack_of
        self.alarm_rules = alerts.rules.alarm_rules
        self.wake: dict[str, asyncio.Event] = {name: asyncio.Event() for name in self.channels}
        self.ladder_wake = asyncio.Event()
        self._log_once = LogOnce(log, clock)
        # (person, channel) → times of capped pages sent to them in the last hour (rebuilt on start).
        self._sent: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        # (channel, people) → the group window alarm pages to them are in, and how many went at once.
        self._group_until: dict[tuple[str, tuple[str, ...]], tuple[float, int]] = {}  # (window end, paged in it)
        # Back-off is per channel, not per message: when the receiver is back, its queue goes out
        # in the order it was made.
        self._failures: dict[str, int] = {}  # channel → consecutive failed sends
        self._retry_at: dict[str, float] = {}  # channel → not before
        self._needs_reconcile = False
        self._rebuild_caps()

    # ------------------------------------------------------------------ transitions → ladders

    def on_transition(self, t: Transition) -> None:
        """Called by the alert path after it saved a transition (synchronously, on the loop)."""
        try:
            self._on_transition(t)
        except Exception:  # the alert is stored; the rule path must go on
            # ``reconcile`` (at start, and on the ladder task's next turn) finds the ladder that
            # is missing and starts it.
            log.exception("could not plan notifications for alert %s; will retry", t.alert.id)
            self._needs_reconcile = True
            self.ladder_wake.set()

    def _on_transition(self, t: Transition) -> None:
        esc = self.store.escalation(t.alert.id)
        if t.kind in ("raised", "escalated") and t.alert.is_open:
            if esc is None or esc.severity != int(t.alert.severity):
                self._start(t.alert, restart=esc is not None)
        elif t.kind == "downgraded" and t.alert.is_open and t.alert.acked_at is None:
            # The elder got up: the ladder for the old severity must not climb on (the emergency
            # tier two minutes later). Those already paged hear of it now; the new severity's
            # own route decides who else is told, and when (a 四级 notice waits for the morning).
            if esc is not None:
                self._tell(t, esc)
                self.store.save_notify(
                    drop_escalations=[esc.alert_id],
                    log=[LogRow(t.alert.id, self.clock.now(), "replanned", detail={"severity": int(t.alert.severity)})],
                )
            self._start(t.alert, restart=True, kind="downgraded")
        elif t.kind == "repeated" and esc is not None and t.alert.acked_at is None:
            if self.clock.now() - esc.paged_at >= self.settings.renotify_interval:
                self._page(t.alert, esc, kind="repeated", advance=False)
        elif t.kind in ("acknowledged", "resolved") and esc is not None:
            self._close(t, esc)
        elif t.kind == "flapping" and esc is not None:
            self._tell(t, esc)  # once: the repeats are folded into this alert from now on

    def _start(self, alert: Alert, restart: bool = False, kind: str = "") -> None:
        route = self.route(alert)
        now = self.clock.now()
        if route is None:
            self.store.save_notify(log=[LogRow(alert.id, now, "unrouted", detail={"rule": alert.rule})])
            return
        ladder = self.ladders[route.ladder]
        first = max(now, alert.raised_at + ladder.tiers[0].after) if not restart else now
        esc = Escalation(alert.id, ladder.id, int(alert.severity), 0, first, 0.0, ())
        if first > now:
            self.store.save_notify(escalations=[esc])
            self.ladder_wake.set()
            return
        self._page(alert, esc, kind=kind or ("escalated" if restart else "raised"), advance=True)
        if self.is_alarm(alert) and len(ladder.tiers) > 1:
            self._storm(alert)

    def is_alarm(self, alert: Alert) -> bool:
        """Alarm class: its rule says ``alarm = true`` in its pack (fire, smoke, gas, fall, SOS …)."""
        return alert.rule in self.alarm_rules

    def _storm(self, alert: Alert) -> None:
        """More open, unacknowledged alarms than one person can handle: page the next tier now."""
        open_alarms = [
            a for a in self.store.alerts(open_only=True, limit=100_000) if a.acked_at is None and self.is_alarm(a)
        ]
        esc = self.store.escalation(alert.id)
        if len(open_alarms) <= self.settings.storm_open_alarms or esc is None or esc.step != 1:
            return
        self.store.save_notify(
            log=[LogRow(alert.id, self.clock.now(), "storm", detail={"open_alarms": len(open_alarms)})]
        )
        self._page(alert, esc, kind="escalated", advance=True)

    def tick(self) -> None:
        """Page every ladder step that has come due."""
        now = self.clock.now()
        for esc in self.store.escalations():
            if esc.next_at is None or esc.next_at > now:
                continue
            alert = self.store.alert(esc.alert_id)
            if alert is None or not alert.is_open or alert.acked_at is not None:
                self.store.save_notify(drop_escalations=[esc.alert_id])
                continue
            kind = "raised" if esc.step == 0 else "escalated" if esc.step < self._tiers(esc) else "reminder"
            self._page(alert, esc, kind=kind, advance=True)

    def next_deadline(self) -> float | None:
        due = [e.next_at for e in self.store.escalations() if e.next_at is not None]
        return min(due, default=None)

    def reconcile(self) -> None:
        """After a start or a store failure: start the ladders of open alerts that have none
        (raised just before a crash), and close those of alerts resolved or acknowledged."""
        open_alerts = {a.id: a for a in self.store.alerts(open_only=True, limit=100_000)}
        ladders = {e.alert_id: e for e in self.store.escalations()}
        for alert_id, esc in ladders.items():
            alert = open_alerts.get(alert_id) or self.store.alert(alert_id)
            if alert is None:
                self.store.save_notify(drop_escalations=[alert_id])
            elif not alert.is_open or alert.acked_at is not None:
                kind = "resolved" if not alert.is_open else "acknowledged"
                self._close(Transition(kind, alert, alert.resolved_by or alert.acked_by), esc)
        for alert in open_alerts.values():
            if alert.id not in ladders and alert.acked_at is None and not self._was_routed(alert):
                self._start(alert)

    def _was_routed(self, alert: Alert) -> bool:
        return any(r.action in ("unrouted", "paged", "held", "ladder_done") for r in self.store.alert_log(alert.id))

    def _tiers(self, esc: Escalation) -> int:
        ladder = self.ladders.get(esc.ladder)
        return len(ladder.tiers) if ladder else 1

    def _page(self, alert: Alert, esc: Escalation, *, kind: str, advance: bool) -> None:
        ladder = self.ladders.get(esc.ladder)
        now = self.clock.now()
        if ladder is None:  # the ladder was removed from config since
            self.store.save_notify(drop_escalations=[esc.alert_id])
            return
        tier_no = min(esc.step, len(ladder.tiers) - 1)
        tier = ladder.tiers[tier_no]
        alarm = self.is_alarm(alert)
        due = now if alarm else self._after_quiet(ladder, now)
        people = self.recipients(alert, tier)
        notes: list[tuple[str, str, str, float, dict[str, object]]] = []
        rows: list[LogRow] = []
        where: dict[str, object] = {"ladder": ladder.id, "tier": tier_no, "kind": kind}
        paged: list[str] = []  # channels that take it now
        paged_to: dict[str, None] = {}  # the people they take it to, in order
        used = list(esc.channels)
        for channel in tier.channels:
            key = f"{alert.id}/s{int(alert.severity)}/{esc.step if advance else f'r{round(now)}'}/{channel}"
            if alarm:
                allowed, when = people, self._grouped(channel, people, now)
            else:
                allowed, when = self._under_cap(alert, people, channel, due, rows), due
                if people and not allowed:
                    continue  # everyone it was for is over their hourly cap: it is in their summaries
            note = self.render(alert, kind, allowed, key, now, channel=channel)
            body = note.to_dict()
            body["alarm"] = alarm
            notes.append((key, channel, alert.id, when, body))
            if channel not in used:
                used.append(channel)
            if when > now:  # not sent now: the audit trail says so, with until when and why
                why = "grouped" if alarm else "quiet"
                held = {**where, "to": [p.id for p in allowed], "until": when, "why": why}
                rows.append(LogRow(alert.id, now, "held", channel=channel, detail=held))
            else:
                paged.append(channel)
                paged_to.update((p.id, None) for p in allowed)
        if paged:
            detail = {**where, "channels": paged, "to": list(paged_to), "due_at": now}
            rows.insert(0, LogRow(alert.id, now, "paged", detail=detail))
        if advance:
            step = esc.step + 1
            if step < len(ladder.tiers):
                next_at: float | None = max(now, alert.raised_at + ladder.tiers[step].after)
            elif ladder.repeat is not None:
                next_at = now + ladder.repeat
            else:
                next_at = None
        else:
            step, next_at = esc.step, esc.next_at
        if not people:
            self._log_once.warning(
                ("nobody", ladder.id, tier_no),
                "ladder %s tier %d reaches nobody for alert %s (roster / targets %s); group channels still get it",
                ladder.id,
                tier_no,
                alert.id,
                tier.to,
            )
        new = replace(esc, step=step, next_at=next_at, paged_at=now, channels=tuple(used))
        self.store.save_notify(escalations=[new], notifications=notes, log=rows)
        if self.on_page is not None:
            for row in rows:
                self.on_page(self._page_line(alert, row))
        if tier_no > 0 and advance and kind == "escalated" and esc.severity == int(alert.severity):
            self.alerts.mark(alert.id, "escalated", (("tier", tier_no),))
        self._wake(tier.channels)

    def _page_line(self, alert: Alert, row: LogRow) -> str:
        """``  → 第1级通知 李值班 via robot (alert …)`` or what was held, until when and why."""
        d = row.detail or {}
        names = "、".join(self._name(str(p)) for p in d.get("to", ())) or "（无人，仅群通知）"
        tier = f"第{int(str(d.get('tier', 0))) + 1}级"
        if row.action == "paged":
            return f"  → {tier}通知 {names} via {', '.join(map(str, d.get('channels', ())))} (alert {alert.id})"
        until = d.get("until")
        when = datetime.fromtimestamp(float(str(until)), zone(self.tz)).strftime("%H:%M:%S") if until else "?"
        why = HELD_ZH.get(str(d.get("why", "")), str(d.get("why", "")))
        return f"  ⏸ {tier}暂未发送 {names} via {row.channel}：{why}，{when}发出 (alert {alert.id})"

    def _close(self, t: Transition, esc: Escalation) -> None:
        """Tell every channel that was paged that the alert is taken care of, then stop."""
        now = self.clock.now()
        notes = []
        paged = self._paged_on(t.alert.id)
        for channel in esc.channels:
            key = f"{t.alert.id}/{t.kind}/{channel}"
            others = tuple(p for p in paged.get(channel, ()) if p.id != t.actor)  # who acted knows
            note = self.render(t.alert, t.kind, others, key, now, actor=t.actor, channel=channel)
            notes.append((key, channel, t.alert.id, now, note.to_dict()))
        row = LogRow(t.alert.id, now, "ladder_done", detail={"by": t.kind, "step": esc.step})
        self.store.save_notify(drop_escalations=[esc.alert_id], notifications=notes, log=[row])
        self._wake(esc.channels)

    def _tell(self, t: Transition, esc: Escalation) -> None:
        """An informational message to every channel already paged (no new page)."""
        now = self.clock.now()
        notes = []
        paged = self._paged_on(t.alert.id)
        for channel in esc.channels:
            key = f"{t.alert.id}/{t.kind}/{channel}"
            note = self.render(t.alert, t.kind, paged.get(channel, ()), key, now, channel=channel)
            notes.append((key, channel, t.alert.id, now, note.to_dict()))
        self.store.save_notify(notifications=notes)
        self._wake(esc.channels)

    def _paged_on(self, alert_id: str) -> dict[str, tuple[Recipient, ...]]:
        """Per channel, the people paged about the alert so far: they hear that it is taken care
        of (an SMS with no recipient reaches nobody; a robot @-mentions them)."""
        out: dict[str, dict[str, Recipient]] = {}
        for n in self.store.notifications(alert_id):
            if n.body.get("kind") in PAGE_KINDS:
                for r in Notification.from_dict(n.body).recipients:
                    out.setdefault(n.channel, {}).setdefault(r.id, r)
        return {channel: tuple(people.values()) for channel, people in out.items()}

    def _wake(self, channels: Iterable[str]) -> None:
        for name in channels:
            if name in self.wake:
                self.wake[name].set()
        self.ladder_wake.set()
        if self.on_change is not None:
            self.on_change()

    # ------------------------------------------------------------------ who and when

    def route(self, alert: Alert) -> Route | None:
        for route in self.config.routes:
            if route.severity is not None and int(alert.severity) not in route.severity:
                continue
            if route.rules is not None and not any(fnmatch.fnmatchcase(alert.rule, p) for p in route.rules):
                continue
            if route.packs is not None and self.pack_of.get(alert.rule, "site") not in route.packs:
                continue
            if route.buildings is not None and alert.location.building not in route.buildings:
                continue
            return route
        return None

    def recipients(self, alert: Alert, tier: Tier) -> list[Recipient]:
        now = self.clock.now()
        building = alert.location.building
        household = self.household_of(alert)
        found: dict[str, Recipient] = {}

        def covers(buildings: Sequence[str]) -> bool:
            return not buildings or not building or building in buildings

        for target in tier.to:
            if target == "family":
                for r in self.config.residents:
                    if household and r.household == household:
                        for i, c in enumerate(r.contacts):
                            found.setdefault(
                                contact_id(r.id, i),
                                Recipient(contact_id(r.id, i), c.name, c.phone, c.relation or "family"),
                            )
            elif target == "visitors":
                for v in self.config.visitors:
                    if household and household in v.households:
                        found.setdefault(v.id, Recipient(v.id, v.name, v.phone, v.role))
            elif target.startswith("on_duty"):
                role = target.partition(":")[2]
                for shift, window in self.shifts:
                    s = self.staff.get(shift.person)
                    if s and (not role or s.role == role) and covers(s.buildings) and window.contains(now):
                        found.setdefault(s.id, Recipient(s.id, s.name, s.phone, s.role))
            elif target.startswith("role:"):
                role = target.partition(":")[2]
                for s in self.config.staff:
                    if s.role == role and covers(s.buildings):
                        found.setdefault(s.id, Recipient(s.id, s.name, s.phone, s.role))
            elif target in self.staff:
                s = self.staff[target]
                found.setdefault(s.id, Recipient(s.id, s.name, s.phone, s.role))
            elif target in self.visitors:
                v = self.visitors[target]
                found.setdefault(v.id, Recipient(v.id, v.name, v.phone, v.role))
        return list(found.values())

    def household_of(self, alert: Alert) -> str:
        """The household id (``1-1-101``; the alert's location carries the door number)."""
        if self.device_household.get(alert.device_id):
            return self.device_household[alert.device_id]
        first = alert.resident.split(",")[0]
        return self.resident_household.get(first, "")

    def _after_quiet(self, ladder: Ladder, now: float) -> float:
        window = self.quiet.get(ladder.id)
        if window is None or not window.contains(now):
            return now
        t = now
        for _ in range(24 * 60 + 1):  # a quiet window is at most a day long
            t += 60.0
            if not window.contains(t):
                return float(int(t // 60) * 60)
        return now  # a window that never ends would silence the ladder: page now instead

    def _rebuild_caps(self) -> None:
        # Only capped pages count: not alarms, not acknowledgement or resolution notices.
        for n in self.store.sent_since(self.clock.now() - HOUR):
            if n.body.get("kind") in PAGE_KINDS and not n.body.get("alarm", False):
                for r in n.body.get("recipients", ()):
                    self._sent[(str(r["id"]), n.channel)].append(n.due_at)

    def _grouped(self, channel: str, people: Sequence[Recipient], now: float) -> float:
        """When an alarm page to ``people`` on ``channel`` goes out: now, unless ``GROUP_AFTER``
        already went to them in this group window — a storm: then at the window's end, together
        with the rest of it. Two alarms a few seconds apart are each paged at once."""
        key = (channel, tuple(sorted(p.id for p in people)))
        until, sent = self._group_until.get(key, (0.0, 0))
        if now >= until:
            until, sent = now + self.settings.group_window, 0
        if sent < GROUP_AFTER or self.settings.group_window <= 0:
            self._group_until[key] = (until, sent + 1)
            return now
        return until

    def _under_cap(
        self, alert: Alert, people: list[Recipient], channel: str, due: float, rows: list[LogRow]
    ) -> list[Recipient]:
        """The people who may get another capped page on ``channel`` now; the others get this
        alert in their summary, queued for when their hour frees up (a ``held`` row each)."""
        if alert.severity is Severity.CRITICAL:
            return people
        allowed = []
        cap = self.settings.cap_per_hour
        for p in people:
            sent = self._sent[(p.id, channel)]
            while sent and sent[0] <= due - HOUR:
                sent.popleft()
            if len(sent) < cap:
                sent.append(due)
                allowed.append(p)
            else:
                rows.append(self._hold(p, channel, alert, sent[0] + HOUR))
        return allowed

    def _hold(self, person: Recipient, channel: str, alert: Alert, free_at: float) -> LogRow:
        key = f"summary/{person.id}/{channel}/{round(free_at)}"
        existing = self.store.notification(key)
        held: list[dict[str, object]] = list(existing.body["alert"].get("held", ())) if existing else []
        held.append({"id": alert.id, "severity": int(alert.severity), "message_zh": alert.message_zh})
        lines = [
            f"{i + 1}. [{Severity(int(str(h['severity']))).label_zh}] {h['message_zh']}（{h['id']}）"
            for i, h in enumerate(held)
        ]
        note = Notification(
            key=key,
            alert_id=alert.id,
            kind="summary",
            severity=min(int(str(h["severity"])) for h in held),
            title=f"【告警汇总】过去一小时另有{len(held)}条告警",
            text="\n".join(lines),
            text_en=f"{len(held)} more alerts in the last hour (over the hourly cap)",
            recipients=(person,),
            alert={"held": held},
            created_at=self.clock.now(),
        )
        self.store.merge_summary(key, channel, alert.id, free_at, note.to_dict())
        detail = {"to": [person.id], "until": free_at, "why": "cap_per_hour", "summary": key}
        return LogRow(alert.id, self.clock.now(), "held", channel=channel, detail=detail)

    # ------------------------------------------------------------------ messages

    def render(
        self,
        alert: Alert,
        kind: str,
        people: Sequence[Recipient],
        key: str,
        now: float,
        actor: str = "",
        channel: str = "",
    ) -> Notification:
        invite = self.invites.for_page(alert, people, channel, now) if kind in PAGE_KINDS else None
        place = alert.location.label_zh() if hasattr(alert.location, "label_zh") else ""
        when = datetime.fromtimestamp(alert.raised_at, zone(self.tz)).strftime("%m-%d %H:%M")
        head = f"【{alert.severity.label_zh}·{KIND_ZH.get(kind, kind)}】"
        lines = [alert.message_zh]
        if place and place not in alert.message_zh:
            lines.append(f"地点：{place}")
        lines.append(f"时间：{when}" + (f"（共{alert.count}次）" if alert.count > 1 else ""))
        if kind == "flapping":
            lines.append(
                f"该设备反复报警、恢复（抖动），已合并为本条告警，不再逐次通知；"
                f"恢复稳定{format_duration_zh(self.alerts.flap_window)}后自动解除"
            )
        if kind == "acknowledged":
            lines.append(f"已由{self._name(actor or alert.acked_by)}确认")
        elif kind == "resolved":
            who = alert.resolved_by or actor
            lines.append("已自动恢复" if who.startswith("rule:") else f"已由{self._name(who)}处置")
            if alert.resolve_note:
                lines.append(f"处置记录：{alert.resolve_note}")
        else:
            lines.append(invite.zh if invite else self.settings.ack_hint_zh.format(id=alert.id))
        lines.append(f"告警编号：{alert.id}")
        en = f"[{alert.severity.label_en} · {kind}] {alert.message_en} (alert {alert.id})"
        if kind not in ("acknowledged", "resolved"):
            en += ". " + (invite.en if invite else self.settings.ack_hint_en.format(id=alert.id))
        return Notification(
            key=key,
            alert_id=alert.id,
            kind=kind,
            severity=int(alert.severity),
            title=head + _label(alert.message_zh, place),
            text="\n".join(lines),
            text_en=en,
            recipients=tuple(people),
            alert=alert.to_dict(),
            created_at=now,
            link=invite.link if invite else "",
            links=invite.links if invite else {},
            reply_code=invite.reply_code if invite else "",
        )

    def _name(self, person: str) -> str:
        if person.startswith(TOKEN_ACTOR):  # an integration acting with its own key or token
            return f"系统接口{person[len(TOKEN_ACTOR) :]}"
        return self.people.names.get(person) or person or "值班人员"

    # ------------------------------------------------------------------ delivery

    async def run_channel(self, name: str) -> None:
        """Deliver one channel's queue, oldest due first, until cancelled."""
        channel = self.channels[name]
        wake = self.wake[name]
        await channel.open()
        try:
            while True:
                wake.clear()
                wait = self._retry_at.get(name, 0.0) - self.clock.now()
                if wait > 0:
                    await self.clock.sleep(wait)
                    continue
                due = self.store.notifications_due(name, self.clock.now())
                for batch in _batches(due):
                    if not await self._deliver(channel, batch):
                        break
                if due:
                    if self.on_change is not None:
                        self.on_change()  # delivered or failed: the audit trail has news
                    continue
                nxt = self.store.next_notification_due(name)
                delay = 60.0 if nxt is None else max(0.0, nxt - self.clock.now())
                await sleep_or_wake(self.clock, delay, wake)
        finally:
            await channel.close()

    async def _deliver(self, channel: Channel, batch: Sequence[QueuedNotification]) -> bool:
        """Send one notification, or a storm's alarm pages to the same people as one message;
        False when the channel is down (the rest of its queue waits too)."""
        notes = [Notification.from_dict(q.body) for q in batch]
        note = notes[0] if len(notes) == 1 else self._grouped_note(notes)
        now = self.clock.now()
        try:
            await channel.send(note)
        except RetryableSinkError as exc:
            failures = self._failures.get(channel.name, 0)
            self._failures[channel.name] = failures + 1
            delay = min(self.settings.backoff_max, self.settings.backoff_initial * 2 ** min(failures, 20))
            delay *= 0.75 + 0.5 * self.rng.random()
            self._log_once.warning(
                ("retry", channel.name), "channel %s cannot deliver (%s); retrying with back-off", channel.name, exc
            )
            for queued, one in zip(batch, notes, strict=True):
                self.store.notification_result(
                    queued.id,
                    "pending",
                    now,
                    str(exc),
                    log=LogRow(queued.alert_id, now, "failed", channel=channel.name, detail={"error": str(exc)[:200]}),
                )
                self._fall_back(channel.name, queued, one, now)
            self._retry_at[channel.name] = now + delay
            return False
        except RejectedBatchError as exc:
            log.error("channel %s rejected notification %s: %s", channel.name, note.key, exc)
            for queued in batch:
                self.store.notification_result(
                    queued.id,
                    "rejected",
                    now,
                    str(exc),
                    log=LogRow(
                        queued.alert_id, now, "rejected", channel=channel.name, detail={"error": str(exc)[:200]}
                    ),
                )
            self.store.count({f"notify.{channel.name}.rejected": len(batch)})
            return True
        self._failures[channel.name] = 0
        self._retry_at.pop(channel.name, None)
        self._log_once.reset(("retry", channel.name))
        now = self.clock.now()
        for queued, one in zip(batch, notes, strict=True):
            detail: dict[str, object] = {"kind": one.kind, "to": [r.id for r in one.recipients], "key": one.key}
            if len(batch) > 1:
                detail["grouped"] = note.key
            self.store.notification_result(
                queued.id,
                "sent",
                now,
                log=LogRow(queued.alert_id, now, "delivered", channel=channel.name, detail=detail),
            )
            if one.kind in PAGE_KINDS:
                self.alerts.mark(queued.alert_id, "notified")
        self.store.count({f"notify.{channel.name}.sent": 1})
        return True

    def _grouped_note(self, notes: Sequence[Notification]) -> Notification:
        """One message listing a storm's alarms (never more than ``GROUP_MAX``), each with its id."""
        severity = min(n.severity for n in notes)
        ids = [n.alert_id for n in notes]
        lines = [
            f"{i + 1}. [{Severity(n.severity).label_zh}] {n.alert.get('message_zh') or n.title}（{n.alert_id}）"
            + (f" 回复 1 {n.reply_code} 确认" if n.reply_code else f" 一键确认：{n.link}" if n.link else "")
            for i, n in enumerate(notes)
        ]
        if not any(n.reply_code or n.link for n in notes):
            lines.append(self.settings.ack_hint_zh.format(id="、".join(ids)))
        listed = "; ".join(f"{n.alert.get('message_en', '')} ({n.alert_id})" for n in notes)
        return Notification(
            key=f"group/{notes[0].key}/{len(notes)}",
            alert_id=notes[0].alert_id,
            kind="grouped",
            severity=severity,
            title=f"【{Severity(severity).label_zh}·多条报警】{len(notes)}条报警同时发生",
            text="\n".join(lines),
            text_en=f"{len(notes)} alarms at once: {listed}. " + self.settings.ack_hint_en.format(id=", ".join(ids)),
            recipients=notes[0].recipients,
            alert={"alerts": [dict(n.alert) for n in notes]},
            created_at=min(n.created_at for n in notes),
        )

    def _fall_back(self, channel: str, queued: QueuedNotification, note: Notification, now: float) -> None:
        """Also send an urgent message that is stuck on ``channel`` over the fallback channel."""
        fallback = self.settings.fallback
        if (
            fallback is None
            or fallback == channel
            or fallback not in self.channels
            or note.severity > self.settings.fallback_severity
            or note.kind in ("acknowledged", "resolved", "summary", "reply")
            or now - note.created_at < self.settings.fallback_after
        ):
            return
        key = f"{note.key}/fallback"
        queued_now = self.store.save_notify(
            notifications=[(key, fallback, queued.alert_id, now, replace(note, key=key).to_dict())],
            log=[LogRow(queued.alert_id, now, "fallback", channel=fallback, detail={"from": channel, "key": note.key})],
        )
        if queued_now:
            self._wake([fallback])

    async def watch_health(self, name: str, every: float = HEALTH_INTERVAL) -> None:
        """For a channel that can tell (``check()``: the SMS modem's registration and signal):
        ask every ``every`` seconds, keep the answer in the store for ``sensegate status``, and
        log once when it turns bad and when it is good again."""
        check = getattr(self.channels[name], "check", None)
        if check is None:
            return
        while True:
            status = await check()
            healthy = status.get("registered", True) is not False and not status.get("last_error")
            self.store.set_meta(f"channel.{name}", json.dumps(status, ensure_ascii=False, default=str))
            if healthy:
                self._log_once.reset(("health", name))
            else:
                self._log_once.warning(
                    ("health", name), "channel %s unhealthy: %s", name, status.get("last_error") or status
                )
            await self.clock.sleep(every)

    async def run_ladders(self) -> None:
        """Page ladder steps as they come due."""
        self.reconcile()
        while True:
            self.ladder_wake.clear()
            if self._needs_reconcile:
                self._needs_reconcile = False
                self.reconcile()
            self.tick()
            nxt = self.next_deadline()
            delay = 3600.0 if nxt is None else max(0.0, nxt - self.clock.now())
            await sleep_or_wake(self.clock, delay, self.ladder_wake)


def _batches(due: Sequence[QueuedNotification]) -> list[list[QueuedNotification]]:
    """Due notifications in order, consecutive alarm pages to the same people gathered (a storm
    reads as one message listing several households); everything else alone."""
    out: list[list[QueuedNotification]] = []
    for q in due:
        last = out[-1] if out else None
        if (
            last is not None
            and len(last) < GROUP_MAX
            and _groupable(q)
            and _groupable(last[0])
            and _people(q) == _people(last[0])
        ):
            last.append(q)
        else:
            out.append([q])
    return out


def _groupable(q: QueuedNotification) -> bool:
    return bool(q.body.get("alarm")) and q.body.get("kind") in PAGE_KINDS


def _people(q: QueuedNotification) -> list[str]:
    return [str(r["id"]) for r in q.body.get("recipients", ())]


def _label(message: str, place: str) -> str:
    """A short title: the rule's own label (the message's leading 【…】) and the place."""
    if message.startswith("【") and "】" in message:
        label = message[1 : message.index("】")]
        return f"{label} {place}".strip()
    first = message.split("\n", 1)[0]
    return first if len(first) <= 40 else first[:39] + "…"
