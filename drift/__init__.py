"""Drift detectors over arrays: covariate (alibi-detect), label (chi-square), concept (river).

Every detector returns one :class:`drift.result.DriftResult`; backends are imported
only inside their adapter modules, so ``import drift`` stays light.
"""
