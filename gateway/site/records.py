"""Config items a site has by the thousand (devices, households, residents), kept small.

A pydantic model keeps, per instance, a ``__dict__`` and the set of the fields that were given:
about 1.5 KB for a device and its ``mqtt`` source, 30 MiB for a 20,000-device block, for values
the gateway only ever reads. A *record* is a frozen slots dataclass (about 120 bytes) that
pydantic validates through a model made from the record's own fields (``record``): the same
annotations, defaults and ``extra="forbid"``, the same name, so a mistake in a
``[[devices]]`` table reads exactly as it did when ``Device`` was that model. The model
instance lives only while its record is built.

    @record
    @dataclass(frozen=True, slots=True)
    class Household:
        id: Annotated[str, Field(pattern=ID_PATTERN)]
        building: Shared
        unit: Shared = ""

``Shared`` is a string that many records repeat (a household's building, a device's model or
room): each distinct value is kept once. A leaf module (pydantic only).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, get_type_hints

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model
from pydantic_core import core_schema

T = TypeVar("T")

# A string repeated across records: kept once per distinct value.
Shared = Annotated[str, AfterValidator(sys.intern)]

MODEL = "__record_model__"  # the class attribute holding a record's validating model


class RecordModel(BaseModel):
    """The base of the models ``record`` makes: as every site-config model."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def record(cls: type[T]) -> type[T]:
    """Make a frozen slots dataclass validate as a pydantic model of its fields (see above).

    Its validator takes a mapping (through the model, in strict mode as the config is) or an
    instance of the record itself as it is; ``model_dump`` dumps it as the model would."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__}: @record goes above @dataclass(frozen=True, slots=True)")
    hints = get_type_hints(cls, globalns=vars(sys.modules[cls.__module__]), include_extras=True)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            fields[f.name] = (hints[f.name], f.default)
        elif f.default_factory is not dataclasses.MISSING:
            fields[f.name] = (hints[f.name], Field(default_factory=f.default_factory))
        else:
            fields[f.name] = (hints[f.name], ...)
    model = create_model(cls.__name__, __base__=RecordModel, __module__=cls.__module__, __doc__=cls.__doc__, **fields)
    names = tuple(fields)
    build: Callable[..., T] = cls

    def validate(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> T:
        if isinstance(value, cls):
            return value
        m = handler(value)
        return build(*[getattr(m, n) for n in names])

    def serialize(value: Any, handler: core_schema.SerializerFunctionWrapHandler) -> Any:
        if isinstance(value, cls):  # model_dump() and the like: as the model would be dumped
            value = model.model_construct(**{n: getattr(value, n) for n in names})
        return handler(value)

    def schema(_cls: type[T], source: Any, handler: Any) -> core_schema.CoreSchema:
        inner = handler(model)
        dump = core_schema.wrap_serializer_function_ser_schema(serialize, schema=inner)
        return core_schema.no_info_wrap_validator_function(validate, inner, serialization=dump)

    setattr(cls, "__get_pydantic_core_schema__", classmethod(schema))  # noqa: B010 - mypy: not a dataclass field
    setattr(cls, MODEL, model)
    return cls


def record_model(annotation: Any) -> type[BaseModel] | None:
    """The model a record validates as, or None for anything else (for error messages that list
    the keys a table accepts)."""
    model = getattr(annotation, MODEL, None) if isinstance(annotation, type) else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None
