"""Which samples of a window shifted most: the MMD witness function.

The witness of a window sample ``w`` is ``mean_j k(w, window_j) - mean_i k(w, ref_i)``:
large where the window has mass and the reference has little. Ranking the window by it
names the samples that carry an MMD alarm, so an operator can look at those images.
"""

from __future__ import annotations

import numpy as np
import torch


def witness_scores(x_ref: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The MMD witness of each row of ``x`` against ``x_ref`` (Gaussian kernel, median bandwidth).

    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(size=(200, 2))
    >>> win = np.concatenate([rng.normal(size=(50, 2)), rng.normal(5.0, 0.1, size=(5, 2))])
    >>> sorted(np.argsort(-witness_scores(ref, win))[:5].tolist())
    [50, 51, 52, 53, 54]
    """
    from alibi_detect.utils.pytorch.kernels import GaussianRBF

    ref_t = torch.as_tensor(np.asarray(x_ref, dtype=np.float32).reshape(len(x_ref), -1))
    win_t = torch.as_tensor(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
    kernel = GaussianRBF()
    with torch.no_grad():
        # The first call infers the bandwidth (median heuristic) from window and reference.
        k_win_ref = kernel(win_t, ref_t, infer_sigma=True)
        k_win_win = kernel(win_t, win_t)
    n = len(win_t)
    within = (k_win_win.sum(dim=1) - k_win_win.diagonal()) / max(n - 1, 1)
    return (within - k_win_ref.mean(dim=1)).numpy()


def most_shifted(x_ref: np.ndarray, x: np.ndarray, k: int) -> list[int]:
    """Indices into ``x`` of its ``k`` samples with the largest witness, largest first."""
    if len(x) == 0 or len(x_ref) == 0 or k <= 0:
        return []
    scores = witness_scores(x_ref, x)
    return np.argsort(-scores, kind="stable")[:k].tolist()
