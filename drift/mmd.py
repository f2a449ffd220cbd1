"""Covariate shift: alibi-detect's MMD permutation test, overall and per group.

The reference is configured once (kernel bandwidth from the reference by the
median heuristic) and reused for every window tested against it. Per-group
tests compare a group's window samples with the same group's reference
samples; the threshold is Bonferroni-corrected for the number of tests run,
so a shift in one small group is found even when the overall mix hides it
(see :class:`drift.base.GroupedCovariateDetector`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from drift.base import PermutationCovariateDetector, permutation_mask, permutation_p_value


def _permutation_test(detector: Any, x: np.ndarray, n_permutations: int) -> tuple[float, float]:
    """MMD^2 and its permutation p-value, from alibi-detect's kernel and statistic.

    alibi-detect's own permutation loop copies the whole re-indexed kernel matrix once
    per permutation (its TODO, SeldonIO/alibi-detect#540): about 4 ms each at 850
    samples. The same test is one matrix product over the same kernel matrix, so we
    take the kernel matrix and the MMD^2 from alibi-detect and vectorise the
    permutations; the p-value keeps alibi-detect's convention (share of permuted
    statistics at least as large).
    """
    from alibi_detect.utils.pytorch.distance import mmd2_from_kernel_matrix

    backend = detector._detector
    ref_rows, win_rows = backend.preprocess(x)
    x_ref, x_win = torch.from_numpy(ref_rows), torch.from_numpy(win_rows)
    m = x_win.shape[0]
    kernel = backend.kernel_matrix(x_ref, x_win)
    kernel = kernel - torch.diag(kernel.diag())
    mmd2 = float(mmd2_from_kernel_matrix(kernel, m, permute=False, zero_diag=False))
    total = kernel.shape[0]
    n = total - m
    # Column j of ``on_ref`` marks the samples that permutation j puts on the reference side.
    on_ref = permutation_mask(n_permutations, total, n, dtype=kernel.dtype)
    k_ref = kernel @ on_ref
    k_all = kernel.sum(dim=1, keepdim=True)
    sum_xx = (on_ref * k_ref).sum(dim=0)
    sum_xy = ((1.0 - on_ref) * k_ref).sum(dim=0)
    sum_yy = ((1.0 - on_ref) * (k_all - k_ref)).sum(dim=0)
    permuted = sum_xx / (n * (n - 1)) + sum_yy / (m * (m - 1)) - 2.0 * sum_xy / (n * m)
    return mmd2, permutation_p_value(mmd2, permuted)


class MMDCovariateDetector(PermutationCovariateDetector):
    """MMD two-sample test of a window's features against a fixed reference.

    Takes the parameters of :class:`drift.base.PermutationCovariateDetector`; its
    ``seed`` seeds the permutations.
    """

    detector = "mmd"
    backend = "MMDDrift"
    backend_options: ClassVar[dict[str, Any]] = {"configure_kernel_from_x_ref": True}

    def _score(self, backend: Any, x: np.ndarray) -> tuple[float, float]:
        return _permutation_test(backend, x, self.n_permutations)
