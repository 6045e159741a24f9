"""Latched radar state: what a UART fall radar last said, and which observations to store.

The radars send fall and residence frames **only when the state changes** (PROTOCOLS.md §1.1),
so the driver has to remember them: ``RadarLatch`` holds the last state of every key (fall,
residence, presence, motion state, movement level, heartbeat) for the life of the gateway
process — across unplug/replug of the port, because the radar's state did not change just
because we stopped listening. It also thins telemetry that the radar repeats every second.
Pure: the caller passes the monotonic time.

What is stored (``admit`` returns the observation, possibly with values added, or ``None``):

- ``fall_detected`` / ``fall_cleared`` and ``residence``: **always** — the alarm lane is never
  thinned. A ``residence`` event carries ``fall_active`` (a fall is latched and not cleared),
  the escalation signal "stationary after a fall" the rules use.
- ``presence`` and ``motion`` {state}: when the value changed, or when ``refresh`` seconds
  passed since the last one stored (so the time-series has a current value).
- ``motion`` {level} (sent every second): when it moved by ``level_step`` or more from the last
  stored level, crossed zero, or ``refresh`` seconds passed.
- ``heartbeat``: the first, then at most one per ``refresh`` seconds.

Everything else passes. ``thinned`` counts what was not stored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gateway.models import Kind, Observation, Scalar


@dataclass(slots=True)
class _Held:
    obs: Observation
    at: float  # monotonic time it was last stored


def _key(obs: Observation) -> str:
    if obs.kind in (Kind.FALL_DETECTED, Kind.FALL_CLEARED):
        return "fall"
    if obs.kind == Kind.MOTION:
        return "motion_level" if "level" in obs.values else "motion_state"
    return obs.kind.value


class RadarLatch:
    def __init__(self, refresh: float = 300.0, level_step: int = 10) -> None:
        self.refresh = refresh
        self.level_step = level_step
        self.held: dict[str, _Held] = {}
        self.thinned = 0

    @property
    def fall_active(self) -> bool:
        held = self.held.get("fall")
        return held is not None and held.obs.kind == Kind.FALL_DETECTED

    def state(self) -> dict[str, Scalar]:
        """The latched state as flat values (for logs and status)."""
        out: dict[str, Scalar] = {"fall_active": self.fall_active}
        for key in ("residence", "presence"):
            if key in self.held:
                out[key] = self.held[key].obs.values.get("present", False)
        for key, field in (("motion_state", "state"), ("motion_level", "level")):
            if key in self.held:
                out[field] = self.held[key].obs.values[field]
        return out

    def admit(self, obs: Observation, now: float) -> Observation | None:
        key = _key(obs)
        if key == "residence":
            obs = replace(obs, values={**obs.values, "fall_active": self.fall_active})
        held = self.held.get(key)
        alarm = key in ("fall", "residence")
        if alarm or held is None or now - held.at >= self.refresh or self._changed(key, held, obs):
            self.held[key] = _Held(obs, now)
            return obs
        self.thinned += 1
        return None

    def _changed(self, key: str, held: _Held, obs: Observation) -> bool:
        if key == "heartbeat":
            return False
        if key == "motion_level":
            old, new = held.obs.values.get("level"), obs.values.get("level")
            if not isinstance(old, int | float) or not isinstance(new, int | float):
                return old != new
            return abs(new - old) >= self.level_step or (old == 0) != (new == 0)
        return held.obs != obs
