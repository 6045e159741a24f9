"""Alert delivery channels: each a thin sender behind the contract in ``gateway.alerts.channels.base``."""
