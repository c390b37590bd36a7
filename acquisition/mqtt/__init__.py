"""The station on MQTT: topics, the link (status, state, telemetry, outbox), operator
commands."""
