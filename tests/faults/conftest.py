"""The fault suite: SIGKILLs under load, broker and database outages, a full disk, power loss.

CI runs it in a short mode (the whole suite in under about two minutes); ``--faults-long`` or
``SENSEGATE_FAULTS=long`` runs the same tests for minutes with many more faults. Each test
prints its figures (kills, events, alerts, times) with ``-s``; docs/reliability.md quotes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest


@dataclass(frozen=True, slots=True)
class Mode:
    long: bool
    seconds: float  # of load in the conservation test
    kills: int  # SIGKILLs of the gateway, at least
    cuts: int  # power cuts
    seed: int

    @property
    def name(self) -> str:
        return "long" if self.long else "short"


@pytest.fixture
def mode(request: pytest.FixtureRequest) -> Mode:
    long = bool(request.config.getoption("--faults-long")) or os.environ.get("SENSEGATE_FAULTS") == "long"
    # A fixed seed in CI, so a failure can be replayed; SENSEGATE_FAULTS_SEED to try others.
    seed = int(os.environ.get("SENSEGATE_FAULTS_SEED", "13"))
    if long:
        return Mode(long=True, seconds=300.0, kills=40, cuts=10, seed=seed)
    return Mode(long=False, seconds=36.0, kills=6, cuts=2, seed=seed)
