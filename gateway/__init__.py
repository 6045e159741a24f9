"""SenseGate (智感网关) runtime: config, registry, store-and-forward, ingest, alerts, sinks, CLI."""

__version__ = "0.1.0"
