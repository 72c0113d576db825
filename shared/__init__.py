"""nsp-drift: the domain core and its adapters."""
