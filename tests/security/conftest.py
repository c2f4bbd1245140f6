"""Hypothesis for these tests: no example database on disk (nothing to clean up or commit),
no per-example deadline (CI machines vary), and a fixed seed so a CI failure replays."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("deskbell", database=None, deadline=None, derandomize=True)
settings.load_profile("deskbell")
