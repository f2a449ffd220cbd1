"""Each group's era: the window from which its inputs are what they are now.

A group's era begins at the first window of its latest run of covariate drift (windows
in a row whose test found that group shifted); a group that never shifted has era 0. A
window whose overall test alone drifted moves no era: it does not say which group's images
changed, and an era begun wrongly would stop protecting that group's past. The reference
and the gate use only a group's samples from its era on: a shifted group is compared with,
and held to, its new images, never the ones that are gone, while every other group keeps
its whole history. The eras live in each window's summary (``"eras"``), so a restarted
learner carries them on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.store.schema import Window

Eras = dict[str, int]  # group -> number of the window its era began at (0: never shifted)


def covariate_groups(drifted_groups: Mapping[str, list[str]]) -> set[str]:
    """The groups a window's covariate test found shifted, each by its own test.

    >>> covariate_groups({"covariate": ["B"], "label": ["A"]}), covariate_groups({"covariate": []})
    ({'B'}, set())
    """
    return set(drifted_groups.get("covariate", []))


def next_eras(
    previous: Mapping[str, int], was_shifted: set[str], shifted: set[str], window: int
) -> Eras:
    """The eras after window ``window``: a group this window found shifted (``shifted``) that
    the window before did not (``was_shifted``) begins a new era here.

    >>> next_eras({}, set(), {"B"}, 6)
    {'B': 6}
    >>> next_eras({"B": 6}, {"B"}, {"B"}, 7), next_eras({"B": 6}, set(), {"B"}, 9)
    ({'B': 6}, {'B': 9})
    """
    eras: Eras = {str(g): int(w) for g, w in previous.items()}
    for g in shifted:
        if g not in was_shifted or g not in eras:
            eras[g] = window
    return dict(sorted(eras.items()))


def eras_after(before: Mapping[str, Any], findings: Mapping[str, list[str]], window: int) -> Eras:
    """The eras after window ``window`` from the summary of the window before (``before``,
    ``{}`` for none) and this window's drifted groups by kind (``findings``)."""
    was = covariate_groups(before.get("drifted_groups") or {})
    return next_eras(before.get("eras") or {}, was, covariate_groups(findings), window)


def in_era(groups: np.ndarray, window_numbers: np.ndarray, eras: Mapping[str, int]) -> np.ndarray:
    """Whether each sample (its group and window number) lies in its group's era.

    >>> in_era(np.array(["A", "B", "B"]), np.array([1, 1, 7]), {"B": 6}).tolist()
    [True, False, True]
    """
    start = np.array([eras.get(str(g), 0) for g in groups], dtype=np.int64)
    return np.asarray(window_numbers, dtype=np.int64) >= start


def latest_eras(session: Session, stream_id: int) -> tuple[int, dict[str, int]]:
    """The number of the stream's latest processed labelled window and its groups' eras
    as they stand after it (what traffic and retention compare with now)."""
    row = session.execute(
        select(Window.seq, Window.summary)
        .where(Window.stream_id == stream_id, Window.state == "processed")
        .order_by(Window.seq.desc())
        .limit(1)
    ).first()
    if row is None:
        return 0, {}
    return int(row.seq), dict((row.summary or {}).get("eras") or {})
