"""The functional core: frozen dataclasses, rules, parsing, targeting, diff, rendering. Pure:
imports only the standard library and itself (import-linter enforces it).
"""
