"""What the outside world calls: the Functions glue (app, binding), the CLI, replay, settings.
Builds adapters only through shared.wiring.
"""
