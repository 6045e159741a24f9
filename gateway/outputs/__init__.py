"""Time-series out: the durable forwarder, its InfluxDB sinks, and Home Assistant discovery."""
