"""Prometheus stand-in: `/api/v1/query` for Kepler's built-in analysis queries
(`app.create_app`)."""
