"""Streams as configured objects: their configuration, created, read and changed."""
