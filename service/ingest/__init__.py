"""Ingest: decoding and validating images and samples, windows, rejections."""
