"""Thin Azure Functions entry points (Blueprints). Each handler wires a binding to the core."""
