"""Delivery: retry policy (pure), dispatch (render, send, record) and the worker pool."""
