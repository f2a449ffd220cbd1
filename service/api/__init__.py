"""The HTTP API (FastAPI): request and response schemas and the app factory."""
