"""Kepler: durable delivery pipelines on Temporal."""

__version__ = "0.2.0"
USER_AGENT = f"kepler/{__version__}"
