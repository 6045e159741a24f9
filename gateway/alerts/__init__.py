"""Alerts out to people: the alert path (rules → alerts, derived from the store), routing, ladders and
delivery (notify), channels, the MQTT publisher and acknowledgement commands."""
