"""How many bootstraps alibi-detect's online detectors need: plain arithmetic, no torch.

Kept apart from :mod:`drift.online` so that settings can be checked at start-up without
importing torch or alibi-detect.
"""

from __future__ import annotations

import math


def _enough(n_bootstraps: int, ert: float, window_size: int) -> bool:
    p = 1.0 - 1.0 / ert
    n = n_bootstraps
    for _ in range(window_size):
        if not 1.0 / n <= p <= (n - 1) / n:  # alibi-detect's own check in ``quantile``
            return False
        h = (n - 1) * p + 1  # type-7 quantile; the statistics strictly below it survive
        n = int(h) if h != int(h) else int(h) - 1
    return True


def min_bootstraps(ert: float, window_size: int) -> int:
    """The fewest bootstraps with which alibi-detect's online MMD can set its thresholds.

    At each of the ``window_size`` steps it takes the ``1 - 1/ert`` quantile of the
    surviving bootstrap statistics and keeps only those below it, and it refuses a
    quantile from fewer than ``ert`` statistics. We replay that count (LSDD needs a
    few less) to refuse too few bootstraps before seconds are spent configuring.

    >>> min_bootstraps(100, 20), min_bootstraps(1000, 10)
    (138, 1018)
    """
    low = high = math.ceil(ert)
    while not _enough(high, ert, window_size):
        low, high = high + 1, high * 2
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if _enough(mid, ert, window_size) else (mid + 1, high)
    return high
