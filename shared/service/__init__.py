"""The use cases: intake, evaluate, sweep (pipeline), scan, deliver (dispatch), and the ports they
need as Protocols. Imports the core, never an adapter or an entry point.
"""
