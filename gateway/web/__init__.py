"""The gateway on the LAN over HTTP: today the token-authenticated alert API (ack / resolve), bridged
onto the event loop; the staff console joins it here."""
