"""``[console]``: the duty desk (值班台) the gateway serves on the LAN, and who signs in to it as
what. See docs/console.md.

Roles come from the site config, never from the console: a staff member's ``role`` and a
registered visitor's ``role`` decide what they see and may do once signed in (``console_role``).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.site.validation import FilePath


class ConsoleSettings(BaseModel):
    """``[console]`` in the site config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    # Only this machine by default; "0.0.0.0" (or the box's LAN address) opens it to the LAN.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8480  # 0: any free port (tests)
    # How people reach it, e.g. "https://sensegate.local:8480" (printed at start; links in pages).
    public_url: Annotated[str, Field(pattern=r"^(https?://[^\s/]+(/\S*)?)?$")] = ""
    # The installer's certificate and key (PEM): both, or neither (plain HTTP).
    tls_cert: FilePath | None = None
    tls_key: FilePath | None = None
    # A sign-in lasts this long (hours), then the person signs in again.
    session_hours: Annotated[float, Field(gt=0, le=24 * 31)] = 12.0
    # A one-tap link in a page (public_url + /ack/…) acknowledges for this long (hours).
    link_hours: Annotated[float, Field(gt=0, le=24 * 7)] = 24.0

    @field_validator("tls_cert", "tls_key")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        # The certificate lives with the box's other secrets (/etc/sensegate/…), not next to the
        # config file: an absolute path says where without guessing.
        if path is not None and not path.is_absolute():
            raise ValueError("an absolute path, e.g. /etc/sensegate/console.pem")
        return path

    @model_validator(mode="after")
    def _both_or_neither(self) -> ConsoleSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key together (or neither, for plain HTTP)")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


class ConsoleRole(enum.StrEnum):
    """What a signed-in person or an API token may see and do (docs/console.md, roles)."""

    DUTY = "duty"  # 值班人员: property, security, the mini fire station
    COMMUNITY_WORKER = "community_worker"  # 社区工作者 / 网格员 / registered visitors
    INSTALLER = "installer"  # 安装维护: the maintenance staff
    MANAGER = "manager"  # 管理人员

    @property
    def label_zh(self) -> str:
        return _ROLE_ZH[self]


_ROLE_ZH = {
    ConsoleRole.DUTY: "值班人员",
    ConsoleRole.COMMUNITY_WORKER: "社区工作者",
    ConsoleRole.INSTALLER: "安装维护",
    ConsoleRole.MANAGER: "管理人员",
}

# A staff member's config role → console role.
STAFF_ROLES: dict[str, ConsoleRole] = {
    "property": ConsoleRole.DUTY,
    "security": ConsoleRole.DUTY,
    "fire_station": ConsoleRole.DUTY,
    "community_worker": ConsoleRole.COMMUNITY_WORKER,
    "maintenance": ConsoleRole.INSTALLER,
    "manager": ConsoleRole.MANAGER,
}
# Every registered visitor (community worker, grid worker, volunteer, doctor, family) sees the
# households they look after, as a community worker does.
VISITOR_ROLE = ConsoleRole.COMMUNITY_WORKER
