"""Events in: MQTT (PUBACK after commit) and serial buses (radars, Modbus, OSDP) decoded by the
registry and handed to the store's writer."""
