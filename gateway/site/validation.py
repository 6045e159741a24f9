"""pydantic's validation errors as ``ConfigProblem``s: file, field path, expected, found.

One translation for every file a person writes — the site config, rule files, Modbus
profiles — so a mistake reads the same wherever it is. A leaf module (pydantic, the error
tree and records.py only), so drivers and edge_rules can use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, SecretStr, Tag, ValidationError

from gateway.errors import ConfigProblem
from gateway.site.records import record_model

# The patterns every config model uses for ids and URLs (so errors can say them in words).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
URL_PATTERN = r"^https?://[^\s/:]+(:[0-9]{1,5})?(/\S*)?$"

# Keys whose values are secrets: never repeated in an error message.
SECRET_KEYS = frozenset({"password", "token", "secret", "scbk", "pin"})


def problems_from_validation(
    exc: ValidationError,
    file: str,
    *,
    root: type[BaseModel] | None = None,
    prefix: str = "",
    drop: Collection[str] = (),
    pattern_words: Mapping[str, str] | None = None,
) -> list[ConfigProblem]:
    """``root``: the validated model, to list the keys allowed where an unknown key was found;
    ``prefix``: the path of the validated table inside its file; ``drop``: tagged-union tags
    pydantic puts into locations (people do not write them); ``pattern_words``: how to say what
    a regex pattern wants."""
    problems = []
    words = pattern_words or {}
    for err in exc.errors(include_url=False):
        loc = tuple(
            p for p in err["loc"] if not (isinstance(p, str) and (p in drop or p.startswith(("function-", "model-"))))
        )
        path = loc_to_path(loc)
        kind = err["type"]
        ctx = err.get("ctx") or {}
        if kind == "missing":
            expected, found = "this field to be set", "nothing"
        elif kind == "extra_forbidden":
            allowed = allowed_keys(root, tuple(err["loc"][:-1])) if root is not None else []
            expected = "no such key" + (f" (allowed here: {', '.join(allowed)})" if allowed else "")
            found = f"unknown key {loc[-1]!r}"
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            if close:
                found += f"; did you mean {close[0]!r}?"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            field = str(ctx.get("discriminator", "type")).strip("'")
            path = f"{path}.{field}" if path else field
            expected = f"one of {ctx['expected_tags']}" if "expected_tags" in ctx else f"a {field} key"
            found = repr(ctx["tag"]) if "tag" in ctx else "nothing"
        elif kind == "string_pattern_mismatch" and ctx.get("pattern") in words:
            expected, found = words[ctx["pattern"]], short(err.get("input"))
        elif kind in ("too_short", "string_too_short") and isinstance(err.get("input"), str | SecretStr):
            expected, found = f"at least {ctx.get('min_length')} characters", short(err.get("input"))
        elif kind in _SCALAR_TYPES and isinstance(err.get("input"), str):
            # Strict: "yes" is no boolean and "1883" no port; TOML writes those without quotes.
            expected, found = f"{expected_from_msg(err['msg'])} ({_SCALAR_TYPES[kind]})", short(err.get("input"))
        else:
            expected, found = expected_from_msg(err["msg"]), short(err.get("input"))
        if loc and loc[-1] in SECRET_KEYS and found != "nothing":
            found = "a value (not shown: it is a secret)"
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        problems.append(ConfigProblem(file, path, expected, found))
    return problems


_SCALAR_TYPES = {
    "bool_type": "true or false, without quotes",
    "int_type": "a number without quotes",
    "float_type": "a number without quotes",
}


def loc_to_path(loc: Iterable[int | str]) -> str:
    """``("devices", 3, "household")`` → ``devices[3].household``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def short(value: Any, limit: int = 80) -> str:
    if isinstance(value, Mapping):  # a table: its secrets stay hidden
        value = {k: "***" if k in SECRET_KEYS else v for k, v in value.items()}
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def expected_from_msg(msg: str) -> str:
    # pydantic says "Input should be a valid integer"; turn it into "a valid integer".
    for prefix in ("Input should be ", "Value error, ", "String should "):
        if msg.startswith(prefix):
            rest = msg[len(prefix) :]
            return rest if prefix != "String should " else "a string that should " + rest
    return msg[0].lower() + msg[1:] if msg else msg


def allowed_keys(root: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model at ``loc`` (pydantic's location, tagged-union tags included) under
    ``root`` accepts (best effort, for error messages)."""
    members: list[tuple[Any, frozenset[str]]] = [(root, frozenset())]
    for part in loc:
        if isinstance(part, int):
            continue
        tagged = [(m, tags) for m, tags in members if part in tags]
        if tagged:  # a union member named by its tag: "influxdb_v1", "channel:wecom"
            members = tagged[:1]
            continue
        fields = [f for m, _ in members for name, f in m.model_fields.items() if (f.alias or name) == part]
        if not fields:
            return []
        members = _members(fields[0].annotation)
    if len(members) != 1:
        return []
    model = members[0][0]
    return sorted(f.alias or name for name, f in model.model_fields.items())


def _members(annotation: Any, tags: frozenset[str] = frozenset()) -> list[tuple[Any, frozenset[str]]]:
    """The BaseModel classes inside ``list[X]``, ``X | Y | None``, ``Annotated[…]`` and similar,
    each with the tags pydantic may put in a location for it: its ``Tag``, or the value of a
    ``Literal`` field such as ``type = "influxdb_v1"`` (a discriminator). A record
    (gateway/site/records.py) stands for the model it validates as."""
    annotation = record_model(annotation) or annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        literals = {
            str(v)
            for f in annotation.model_fields.values()
            if get_origin(f.annotation) is Literal
            for v in get_args(f.annotation)
        }
        return [(annotation, tags | literals)]
    args = get_args(annotation)
    if get_origin(annotation) is Annotated:
        tags = tags | {m.tag for m in args[1:] if isinstance(m, Tag)}
        args = args[:1]
    found: list[tuple[Any, frozenset[str]]] = []
    for arg in args:
        found += _members(arg, tags)
    return found


def _path(value: Any) -> Any:
    if isinstance(value, str):
        return Path(value)
    if isinstance(value, Path):
        return value
    raise ValueError("a path (a string)")


# A path in the site config: TOML has no path type, so it takes a string even in strict mode.
FilePath = Annotated[Path, BeforeValidator(_path)]
