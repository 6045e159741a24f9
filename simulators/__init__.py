"""A simulated residential block: devices that speak through the real codecs, a day of
activity with scripted incidents, and a runner that publishes it to a broker. See README.md."""
