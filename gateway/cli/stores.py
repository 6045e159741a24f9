"""How a read-only command opens the site's store: before the gateway's first run there is none,
and that is no error ("no events yet")."""

from __future__ import annotations

from gateway.site.config import SiteConfig
from gateway.store import Store


def no_events_yet(config: SiteConfig) -> str:
    return f"no events yet: the gateway has not run with this config (its store will be {config.store_path})"


def open_or_empty(config: SiteConfig) -> Store:
    """The site's store; before the gateway's first run (no file yet) an empty one in memory, so
    a read-only command answers "nothing yet" — creating the file here would leave it owned by
    whoever ran the command, not by the gateway's user."""
    from gateway.runtime import open_store  # the runtime's modules load only for a command that needs them

    if not config.store_path.exists():
        return Store(":memory:")
    return open_store(config)
