"""The dashboard at /ui (SPEC §10): server-rendered pages, htmx vendored in static/."""
