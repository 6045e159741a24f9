"""Payload formats (codecs) for devices that reach the gateway over MQTT, the frame codecs of
devices on serial lines, and their registries.

The contract every codec keeps: it is pure — no I/O, no clock, no logging — and turns the bytes of
one payload into ``gateway.models.Observation`` values (what happened, the values that came with
it, and the device's own time when the payload carries one), and back: each has an ``encode``
that the simulators use, and ``decode(encode(x)) == x`` for everything ``decode`` can return.
Whatever bytes it is given, a codec raises nothing but ``gateway.errors.PayloadError``, whose
short ``reason`` (``bad_json``, ``wrong_type``, ``unknown_model`` …) is a counter name and whose
message says what was seen. Payloads over ``native.MAX_PAYLOAD`` are rejected before parsing.
Device identity, location and receive time are the runtime's business, not the codec's. How to
add a model or a format: ``drivers/README.md``.

A frame codec (``SERIAL_CODECS``) also has ``split(buffer)``, which cuts whole frames out of a
byte stream (``drivers.framing``); its transport is ``drivers.serial_link``. See
``drivers/README-serial.md``.
"""

from types import ModuleType

from drivers import mr60fda1, mr60fda2, native, rtl433, zigbee2mqtt

FORMATS: dict[str, ModuleType] = {
    "zigbee2mqtt": zigbee2mqtt,
    "rtl_433": rtl433,
    "native": native,
}

# Frame codecs for UART devices, by the ``serial.protocol`` key of a device's config.
SERIAL_CODECS: dict[str, ModuleType] = {
    "mr60fda1": mr60fda1,
    "mr60fda2": mr60fda2,
}
