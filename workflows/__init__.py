"""Workflows: deterministic code only. Each lives in its own importable module."""

from __future__ import annotations

ALL: list[type] = []
