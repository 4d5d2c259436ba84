"""Kepler: durable delivery pipelines on Temporal."""

__version__ = "0.2.3"
USER_AGENT = f"kepler/{__version__}"
