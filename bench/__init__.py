"""Kepler benchmarks (`make bench`, `make bench-soak`): not tests, figures."""
