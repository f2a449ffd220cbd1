"""Drift detectors over arrays: covariate (alibi-detect), label (chi-square), concept (river).

Every window detector returns one :class:`drift.result.DriftResult`; backends are imported
only inside their adapter modules, so ``import drift`` stays light.

- :mod:`drift.base`: the covariate-detector interface (per-group tests, Bonferroni).
- :mod:`drift.covariate`, :mod:`drift.lsdd`, :mod:`drift.ks`: MMD, LSDD and KS on it;
  :mod:`drift.registry` picks one by name.
- :mod:`drift.online`: MMD / LSDD online detectors, one instance at a time.
- :mod:`drift.label`: chi-square on label counts; :mod:`drift.concept`: ADWIN or
  Page-Hinkley on the error stream.
- :mod:`drift.features`: the feature spaces (penultimate layer, untrained encoder).
"""
