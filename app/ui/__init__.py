"""The web UI (Jinja + HTMX) will live here; until it does, Jobplane is driven by the API."""
