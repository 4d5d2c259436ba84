"""The stand-ins, driven with the real client libraries (and compared with the real components)."""
