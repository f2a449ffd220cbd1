"""Samples as operators manage them: deletion with lineage, and retention."""
