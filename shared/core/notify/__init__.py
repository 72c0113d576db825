"""Deliveries, routing limits, explanations and redaction: pure, no HTTP."""
