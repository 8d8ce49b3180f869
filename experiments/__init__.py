"""Experiments that check the method's claims at a scale a CPU can run (each in its own package)."""
