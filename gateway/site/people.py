"""The people the site config names, by the id an acknowledgement records.

Who may acknowledge or resolve an alert is someone the block knows: a member of staff
(``[[staff]]``, by id), a registered visitor (``[[visitors]]``, by id) or a resident's family
contact. Contacts have no id of their own in the config; they are named
``contact:<resident id>:<n>``, ``n`` counting from 0 in the resident's ``contacts`` — the id the
notifier pages them under, so the id in a message is the id to answer with. (``:`` is not
allowed in staff and visitor ids, so a contact's id is never theirs.)

A name that is none of these is refused with the ids it is closest to (difflib), so a typo
such as ``s-lii`` is caught instead of stopping a ladder in the name of nobody.
"""

from __future__ import annotations

import difflib

from gateway.site.config import SiteConfig

MAX_SUGGESTIONS = 3
CUTOFF = 0.6  # difflib's ratio: "s-lii" to "s-li" is 0.89; unrelated ids score well below


def contact_id(resident: str, n: int) -> str:
    return f"contact:{resident}:{n}"


class People:
    def __init__(self, config: SiteConfig) -> None:
        names = {s.id: s.name for s in config.staff}
        names.update((v.id, v.name) for v in config.visitors)
        for r in config.residents:
            names.update((contact_id(r.id, i), c.name) for i, c in enumerate(r.contacts))
        self.names = names  # id → name

    def __contains__(self, person: object) -> bool:
        return person in self.names

    def close_matches(self, person: str) -> list[str]:
        """The ids ``person`` is closest to, best first; a person's name typed instead of an id
        counts as close to that id."""
        by_name = [i for i, name in self.names.items() if name and name == person.strip()]
        by_id = difflib.get_close_matches(person, list(self.names), MAX_SUGGESTIONS, CUTOFF)
        return list(dict.fromkeys([*by_name, *by_id]))[:MAX_SUGGESTIONS]

    def refusal(self, person: str) -> str | None:
        """Why ``person`` may not act on an alert, or None if they may."""
        if person in self.names:
            return None
        return unknown_person(person, self.close_matches(person))


def unknown_person(person: str, suggestions: list[str]) -> str:
    if suggestions:
        quoted = [repr(s) for s in suggestions]
        options = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        return f"unknown person {person!r}; did you mean {options}?"
    return (
        f"unknown person {person!r}: name a staff id, a visitor id or contact:<resident id>:<n> "
        "(a family contact) from the site config"
    )
