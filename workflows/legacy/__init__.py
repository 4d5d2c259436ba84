"""Runs from before a patch, kept only so they replay (docs/architecture.md, "Patches"):
each module here is deleted with the patch that routes around it."""
