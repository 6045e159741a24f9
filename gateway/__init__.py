"""SenseGate (智感网关) runtime: a small kernel (models, errors, clock, log, MQTT helpers, the embedded
broker) and wings that follow the data: site → ingest → store → alerts / outputs / care, with cli and web."""

__version__ = "0.1.0"
