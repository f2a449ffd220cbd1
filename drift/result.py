"""The one result shape every drift detector returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

LabelledKind = Literal["covariate", "label", "concept"]  # tested on labelled windows
# "traffic": the verdict on unlabelled served images (covariate and predicted classes
# together: service.traffic.drift).
DriftKind = Literal[LabelledKind, "traffic"]
DRIFT_KINDS: tuple[str, ...] = get_args(LabelledKind)


@dataclass(frozen=True)
class GroupVerdict:
    """One group's test: whether it ran, its statistic and p-value, and its verdict."""

    is_drift: bool
    statistic: float | None
    p_value: float | None
    n_reference: int
    n_window: int
    tested: bool = True
    note: str = ""


@dataclass(frozen=True)
class DriftResult:
    """A detector's verdict on one window, with everything needed to explain it.

    ``threshold`` is the p-value (or score) threshold after correction for the
    number of tests; ``is_drift`` is true when the overall test or any group's
    test crossed it.
    """

    kind: DriftKind
    detector: str
    is_drift: bool
    statistic: float
    p_value: float | None
    threshold: float
    feature_space: str
    n_reference: int
    n_window: int
    per_group: dict[str, GroupVerdict] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def drifted_groups(self) -> list[str]:
        """Names of the groups whose own test found drift."""
        return sorted(g for g, v in self.per_group.items() if v.is_drift)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, for storage and the API."""
        return asdict(self)
