"""Crashes, restarts, faults and secrets."""
