"""Alerts and remediation tasks: outbox records, destinations and their HTTP senders."""
