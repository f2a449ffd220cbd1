"""Covariate shift: alibi-detect's MMD permutation test, overall and per group.

The reference is configured once (kernel bandwidth from the reference by the
median heuristic) and reused for every window tested against it. Per-group
tests compare a group's window samples with the same group's reference
samples; the threshold is Bonferroni-corrected for the number of tests run,
so a shift in one small group is found even when the overall mix hides it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from drift.result import DriftResult, GroupVerdict

INSTALL_HINT = "alibi-detect with the torch backend is needed: pip install 'alibi-detect[torch]'"


def _mmd(x_ref: np.ndarray, p_value: float, n_permutations: int):  # type: ignore[no-untyped-def]
    try:
        from alibi_detect.cd import MMDDrift
    except ImportError as exc:  # pragma: no cover - guarded optional backend
        raise ImportError(INSTALL_HINT) from exc
    return MMDDrift(
        x_ref,
        backend="pytorch",
        p_val=p_value,
        n_permutations=n_permutations,
        device="cpu",
        configure_kernel_from_x_ref=True,
    )


def _permutation_test(detector, x: np.ndarray, n_permutations: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
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
    x_ref, x = backend.preprocess(x)
    x_ref, x = torch.from_numpy(x_ref), torch.from_numpy(x)
    m = x.shape[0]
    kernel = backend.kernel_matrix(x_ref, x)
    kernel = kernel - torch.diag(kernel.diag())
    mmd2 = float(mmd2_from_kernel_matrix(kernel, m, permute=False, zero_diag=False))
    total = kernel.shape[0]
    n = total - m
    # Column j of ``on_ref`` marks the samples that permutation j puts on the reference side.
    ranks = torch.rand(n_permutations, total).argsort(dim=1).argsort(dim=1)
    on_ref = (ranks < n).to(kernel.dtype).T
    k_ref = kernel @ on_ref
    k_all = kernel.sum(dim=1, keepdim=True)
    sum_xx = (on_ref * k_ref).sum(dim=0)
    sum_xy = ((1.0 - on_ref) * k_ref).sum(dim=0)
    sum_yy = ((1.0 - on_ref) * (k_all - k_ref)).sum(dim=0)
    permuted = sum_xx / (n * (n - 1)) + sum_yy / (m * (m - 1)) - 2.0 * sum_xy / (n * m)
    p_value = float((mmd2 <= permuted).float().mean())
    return mmd2, p_value


class MMDCovariateDetector:
    """MMD two-sample test of a window's features against a fixed reference.

    Parameters
    ----------
    x_ref
        Reference features ``(n, d)``: held-out samples, never training samples.
    groups_ref
        The group of each reference row.
    p_value
        Significance before the correction for the number of tests.
    n_permutations
        Permutations of the test; keep ``1 / n_permutations`` well below the corrected threshold.
    min_group_size
        Samples a group needs in both reference and window to be tested on its own.
    """

    detector = "mmd"

    def __init__(
        self,
        x_ref: np.ndarray,
        groups_ref: Sequence[str],
        *,
        p_value: float = 0.01,
        n_permutations: int = 500,
        min_group_size: int = 20,
        seed: int = 0,
        feature_space: str = "penultimate",
    ) -> None:
        if len(x_ref) != len(groups_ref):
            raise ValueError("x_ref and groups_ref must have the same length")
        if len(x_ref) < 2:
            raise ValueError("the reference needs at least two samples")
        if not 0.0 < p_value < 1.0:
            raise ValueError(f"p_value must lie in (0, 1), got {p_value}")
        self.p_value = p_value
        self.n_permutations = n_permutations
        self.min_group_size = min_group_size
        self.seed = seed
        self.feature_space = feature_space
        self._x_ref = np.asarray(x_ref, dtype=np.float32)
        self._groups_ref = np.asarray(groups_ref)
        self._overall = _mmd(self._x_ref, p_value, n_permutations)
        self._by_group = {
            str(g): _mmd(self._x_ref[self._groups_ref == g], p_value, n_permutations)
            for g in np.unique(self._groups_ref)
            if (self._groups_ref == g).sum() >= min_group_size
        }

    @property
    def n_reference(self) -> int:
        return len(self._x_ref)

    def test(self, x: np.ndarray, groups: Sequence[str]) -> DriftResult:
        """Test a window's features ``x`` (with the group of each row) against the reference."""
        started = time.perf_counter()
        x = np.asarray(x, dtype=np.float32)
        groups_arr = np.asarray(groups)
        testable = [
            g
            for g in sorted(set(groups_arr.tolist()))
            if g in self._by_group and (groups_arr == g).sum() >= self.min_group_size
        ]
        threshold = self.p_value / (1 + len(testable))
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            stat_all, p_all = _permutation_test(self._overall, x, self.n_permutations)
            per_group: dict[str, GroupVerdict] = {}
            for g in sorted(set(groups_arr.tolist()) | set(self._groups_ref.tolist())):
                n_win = int((groups_arr == g).sum())
                n_ref = int((self._groups_ref == g).sum())
                if g not in testable:
                    per_group[g] = GroupVerdict(
                        False, None, None, n_ref, n_win, tested=False, note="too few samples"
                    )
                    continue
                stat_g, p_g = _permutation_test(
                    self._by_group[g], x[groups_arr == g], self.n_permutations
                )
                per_group[g] = GroupVerdict(
                    p_g < threshold, float(stat_g), float(p_g), n_ref, n_win
                )
        is_drift = p_all < threshold or any(v.is_drift for v in per_group.values())
        return DriftResult(
            kind="covariate",
            detector=self.detector,
            is_drift=bool(is_drift),
            statistic=float(stat_all),
            p_value=float(p_all),
            threshold=threshold,
            feature_space=self.feature_space,
            n_reference=self.n_reference,
            n_window=len(x),
            per_group=per_group,
            seconds=time.perf_counter() - started,
        )
