"""What nsp-drift remembers (records, the store port) and the pure helpers over it."""
