"""Drift detectors over arrays: covariate (alibi-detect), label (chi-square), concept (river).

Every window detector returns one :class:`drift.result.DriftResult`; backends are imported
only inside their adapter modules, so ``import drift`` stays light.

- :mod:`drift.names`: the names of the detectors and feature spaces (settings check them).
- :mod:`drift.bonferroni`: a window tested overall and per group at a corrected level.
- :mod:`drift.base`: the covariate-detector interface on alibi-detect backends.
- :mod:`drift.mmd`, :mod:`drift.lsdd`, :mod:`drift.ks`: MMD, LSDD and KS on it;
  :mod:`drift.detectors` picks one by name.
- :mod:`drift.online`: MMD / LSDD online detectors, one instance at a time;
  :mod:`drift.bootstraps`: how many bootstraps they need.
- :mod:`drift.label`: chi-square on label counts; :mod:`drift.concept`: ADWIN or
  Page-Hinkley on the error stream.
- :mod:`drift.features`: the feature spaces (penultimate layer, untrained encoder);
  :mod:`drift.properties`: image properties (brightness, noise, ...) and their explanation
  in words; :mod:`drift.witness`: the window samples that moved most.
"""
