"""``[test_mode]``: test mode (测试模式) and walk tests (现场调试). See docs/installer.md.

A test mode always ends by itself: ``default`` when the installer names no duration, never
longer than ``max`` (at most 24 h). A test mode that runs out while its devices are still
being worked on (an event within ``overrun_activity`` before its end), or a scope in test mode
for more than ``daily_limit`` in one day, is itself an alert (三级): a forgotten test mode is
how a real fire gets missed.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from edge_rules.schedule import parse_duration

_Duration = Annotated[float, BeforeValidator(parse_duration)]
DAY = 86_400.0


class TestModeSettings(BaseModel):
    """``[test_mode]`` in the site config."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    __test__ = False  # settings, not a pytest class

    default: Annotated[_Duration, Field(gt=0, le=DAY)] = 3600.0  # `testmode start` without --for
    max: Annotated[_Duration, Field(gt=0, le=DAY)] = DAY  # the longest --for allowed
    commission: Annotated[_Duration, Field(gt=0, le=DAY)] = 4 * 3600.0  # a walk test's test mode
    daily_limit: Annotated[_Duration, Field(gt=0, le=DAY)] = 8 * 3600.0  # per scope and local day
    overrun_activity: Annotated[_Duration, Field(gt=0, le=DAY)] = 600.0
    # A walk test marks a device weak below these (zigbee LQI 0–255; RSSI in dBm from devices
    # that report it) and low on battery under low_battery % or with its low-battery flag.
    weak_linkquality: Annotated[float, Field(ge=0, le=255)] = 40
    weak_rssi: Annotated[float, Field(ge=-150, le=0)] = -85
    low_battery: Annotated[float, Field(ge=0, le=100)] = 20

    @model_validator(mode="after")
    def _within_max(self) -> TestModeSettings:
        for name in ("default", "commission"):
            if getattr(self, name) > self.max:
                raise ValueError(f"{name} is longer than max")
        return self
