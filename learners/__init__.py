"""Learners: the model, continual-learning strategies (via Avalanche), their saved state,
incremental updates and per-group evaluation, all on plain tensors.

Import the submodules you need; importing this package itself loads nothing heavy.
"""
