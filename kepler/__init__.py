"""Kepler: durable delivery pipelines on Temporal."""

__version__ = "0.2.2"
USER_AGENT = f"kepler/{__version__}"
