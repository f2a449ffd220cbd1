"""Gate benchmark: injected group regressions against good candidates, by holdout size.

Data: scikit-learn's 1,797 digits (8x8, upscaled to 28x28), split by *base image* (stratified
by class, fixed seed) into three disjoint sets: training bases (40 %), test bases (25 %) and
holdout bases (35 %). Every sample is a base image under a fresh small random affine change
(`service.demo.augment`, torchvision: +-8 degrees, +-1.5 px, scale 0.92-1.08), in one of two
groups: `A` plain, `B` rotated by 30 degrees with its contrast lowered (0.2 + 0.6 x). Each
base gives several samples per group, so the test set (test bases, `TEST_COPIES` per base
and group, about 3,600 per group) is large and independent of the training data and of
every holdout.

Models are the service's SmallCNN trained with the service's learner (`train_update`). The
champion is trained on the training bases. Every candidate fine-tunes the champion on a
fresh draw of training samples (`FINE_TUNE` per group, 2 epochs):

- *good*: clean labels;
- *injected*: a share (drawn from 15-35 %) of one group's labels (A or B in turn) replaced by
  a wrong class (label + k mod 10, k fixed per candidate: a systematic labelling fault).

Qualification is judged on the large test set, by the paired difference (candidate minus
champion) of per-sample correctness per group: an injected candidate counts only if its
corrupted group is at least 5 points worse (difference <= -0.05); a good candidate counts
only if no group is worse beyond noise (difference + 1.645 standard errors >= 0, a one-sided
5 % test at about +-0.3 points here) and its best-to-worst gap widens by no more than
`max_gap_increase` (else rejecting it would be right). Others are trained and reported, not
counted; candidates are trained until `--candidates` of each kind qualify.

Trials: for each holdout size n (200, 500, 1,000 per group) and each qualifying candidate,
`--draws` fresh holdouts are drawn from the holdout bases (per group, n samples over as many
distinct bases as possible, each base's copies used at most once), spread over windows of
200 samples as the service's gate sees them (`gate_max_per_window`), and `service.gate.run_gate`
decides with the service's default settings. detection_rate = share of injected trials
rejected (also shown for the hard cases, drops of 5-10 points); false_reject_rate = share
of good trials rejected (for any reason: a group, a window or the gap). Candidates are reused
across sizes; holdouts never overlap the training or test bases.

    .venv/bin/python bench/gate.py            # full run (about 6-8 minutes on 2 busy cores)
    .venv/bin/python bench/gate.py --quick    # smoke run (about 2 minutes)

The last line of stdout is one JSON object; the lines before it are progress.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learners.evaluation import predict
from learners.models import SmallCNN, build_model
from learners.update import train_update
from service.demo.stream import augment, digits
from service.pipeline.gate import GateSettings, run_gate

SIZES = (200, 500, 1000)
GROUPS = ("A", "B")
SIZE = 28
SEED = 0
ROTATION_B = 30.0
PER_WINDOW = 200  # the service's gate_max_per_window: one window's share of the holdout
MIN_DROP = 0.05
NEAR = 0.10  # injected drops under this are reported apart: the hard cases
FINE_TUNE = 300  # fine-tuning samples per group for each candidate
LR = 0.02
CORRUPTION = (0.15, 0.35)  # share of one group's labels made wrong: drops of 5 to 30 points


@dataclass(frozen=True)
class Pool:
    """Rendered samples: uint8 images, labels, groups, and the base image each came from."""

    x: torch.Tensor
    y: np.ndarray
    groups: np.ndarray
    bases: np.ndarray
    copies: int


def progress(message: str) -> None:
    print(f"[gate] {message}", flush=True)


def render(
    images: torch.Tensor, labels: np.ndarray, bases: np.ndarray, copies: int, seed: int
) -> Pool:
    """``copies`` fresh augmentations of every base, per group; group-major, then base, copy."""
    rng = np.random.default_rng(seed)
    xs, ys, gs, bs = [], [], [], []
    for group in GROUPS:
        rotation = ROTATION_B if group == "B" else 0.0
        for base in bases:
            for _ in range(copies):
                image = augment(images[base], rng, rotation)
                if group == "B":
                    image = 0.2 + 0.6 * image
                xs.append(image)
                ys.append(labels[base])
                gs.append(group)
                bs.append(base)
    pixels = (torch.stack(xs).clamp(0, 1) * 255).round().to(torch.uint8)
    return Pool(pixels, np.array(ys), np.array(gs), np.array(bs), copies)


def split_bases(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    everything = np.arange(len(labels))
    train, rest = train_test_split(everything, train_size=0.4, stratify=labels, random_state=SEED)
    test, holdout = train_test_split(
        rest, train_size=0.25 / 0.6, stratify=labels[rest], random_state=SEED
    )
    return train, test, holdout


def train(model: SmallCNN, x: torch.Tensor, y: np.ndarray, epochs: int, lr: float, seed: int):
    """One naive update with the service's learner (a new model; the input is untouched)."""
    return train_update(
        model,
        x,
        torch.from_numpy(y.astype(np.int64)),
        sample_ids=[str(i) for i in range(len(y))],
        strategy="naive",
        params={},
        state=None,
        epochs=epochs,
        batch_size=32,
        lr=lr,
        seed=seed,
    ).model


@dataclass
class Candidate:
    kind: str  # "good" or "injected"
    corrupted: str | None
    fraction: float
    test_diff: dict[str, tuple[float, float]]  # group -> (mean difference, standard error)
    gap_increase: float
    holdout_pred: np.ndarray
    qualifies: bool


def paired(champ_ok: np.ndarray, cand_ok: np.ndarray) -> tuple[float, float]:
    diff = cand_ok.astype(float) - champ_ok.astype(float)
    return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(len(diff)))


def make_candidate(
    index: int,
    kind: str,
    champion: SmallCNN,
    train_pool: Pool,
    test: Pool,
    holdout: Pool,
    champ_test_ok: np.ndarray,
    settings: GateSettings,
) -> Candidate:
    rng = np.random.default_rng([SEED, 1, index])
    picks = np.concatenate(
        [
            rng.choice(np.flatnonzero(train_pool.groups == g), FINE_TUNE, replace=False)
            for g in GROUPS
        ]
    )
    y = train_pool.y[picks].copy()
    corrupted, fraction = None, 0.0
    if kind == "injected":
        corrupted = GROUPS[index % len(GROUPS)]
        fraction = float(rng.uniform(*CORRUPTION))
        members = np.flatnonzero(train_pool.groups[picks] == corrupted)
        flip = rng.choice(members, size=round(fraction * len(members)), replace=False)
        y[flip] = (y[flip] + int(rng.integers(1, 10))) % 10
    lr = float(rng.choice([0.01, 0.02, 0.03]))
    model = train(champion, train_pool.x[picks], y, epochs=2, lr=lr, seed=SEED + 100 + index)
    test_ok = predict(model, test.x)[0].numpy() == test.y
    diffs = {g: paired(champ_test_ok[test.groups == g], test_ok[test.groups == g]) for g in GROUPS}

    def gap(ok: np.ndarray) -> float:
        accs = [ok[test.groups == g].mean() for g in GROUPS]
        return float(max(accs) - min(accs))

    gap_increase = gap(test_ok) - gap(champ_test_ok)
    if kind == "injected":
        qualifies = diffs[corrupted][0] <= -MIN_DROP
    else:
        no_worse = all(mean + 1.645 * se >= 0 for mean, se in diffs.values())
        qualifies = no_worse and gap_increase <= settings.max_gap_increase
    return Candidate(
        kind,
        corrupted,
        fraction,
        diffs,
        gap_increase,
        predict(model, holdout.x)[0].numpy(),
        qualifies,
    )


def draw_holdout(pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of n samples per group: as many distinct bases as possible, copies not repeated."""
    chosen = []
    for g in GROUPS:
        start = int(np.flatnonzero(pool.groups == g)[0])
        n_bases = int((pool.groups == g).sum()) // pool.copies
        if n > n_bases * pool.copies:
            raise ValueError(f"a holdout of {n} per group needs more than {n_bases} bases")
        copy_order = rng.random((n_bases, pool.copies)).argsort(axis=1)
        picks: list[int] = []
        for r in range(math.ceil(n / n_bases)):
            for b in rng.permutation(n_bases):
                picks.append(start + b * pool.copies + int(copy_order[b, r]))
        chosen.append(np.array(picks[:n]))
    return np.concatenate(chosen)


def windows_for(count: int, rng: np.random.Generator) -> np.ndarray:
    """Window numbers 1..k for ``count`` samples in random order, ``PER_WINDOW`` per window."""
    k = max(1, round(count / PER_WINDOW))
    return rng.permutation(np.arange(count) % k) + 1


def wilson(successes: int, trials: int) -> tuple[float, float]:
    """95 % Wilson interval of a proportion."""
    if trials == 0:
        return (0.0, 1.0)
    z, p = 1.96, successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = (
        z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    )
    return (max(0.0, centre - half), min(1.0, centre + half))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer candidates and draws")
    parser.add_argument("--candidates", type=int, default=None, help="qualifying per kind")
    parser.add_argument("--draws", type=int, default=None, help="holdouts per candidate and size")
    args = parser.parse_args()
    wanted = args.candidates or (8 if args.quick else 40)
    draws = args.draws or (2 if args.quick else 4)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # the model is tiny; one thread is faster on a busy 2-core machine
    started = time.perf_counter()
    settings = GateSettings()

    images, labels = digits(SIZE)
    train_bases, test_bases, holdout_bases = split_bases(labels)
    copies = {"train": 2 if args.quick else 4, "test": 4 if args.quick else 8, "holdout": 3}
    train_pool = render(images, labels, train_bases, copies["train"], seed=1)
    test = render(images, labels, test_bases, copies["test"], seed=2)
    holdout = render(images, labels, holdout_bases, copies["holdout"], seed=3)
    sizes = tuple(n for n in SIZES if n <= len(holdout_bases) * copies["holdout"])
    progress(
        f"bases: {len(train_bases)} train, {len(test_bases)} test, {len(holdout_bases)} holdout; "
        f"samples per group: {len(train_pool.y) // 2} train, {len(test.y) // 2} test, "
        f"{len(holdout.y) // 2} holdout pool ({time.perf_counter() - started:.1f} s)"
    )

    t = time.perf_counter()
    champion = build_model(n_classes=10, in_channels=1, input_size=SIZE, seed=SEED)
    champion = train(
        champion, train_pool.x, train_pool.y, epochs=4 if args.quick else 8, lr=LR, seed=SEED
    )
    champ_test_ok = predict(champion, test.x)[0].numpy() == test.y
    champ_holdout = predict(champion, holdout.x)[0].numpy()
    accs = {g: round(float(champ_test_ok[test.groups == g].mean()), 4) for g in GROUPS}
    progress(f"champion test accuracy {accs} ({time.perf_counter() - t:.1f} s)")

    t = time.perf_counter()
    counted: dict[str, list[Candidate]] = {"injected": [], "good": []}
    trained = {"injected": 0, "good": 0}
    excluded = {"worse": 0, "gap": 0}
    for kind in ("injected", "good"):
        while len(counted[kind]) < wanted and trained[kind] < 2 * wanted:
            index = trained[kind] + (0 if kind == "injected" else 10_000)
            c = make_candidate(
                index, kind, champion, train_pool, test, holdout, champ_test_ok, settings
            )
            trained[kind] += 1
            if c.qualifies:
                counted[kind].append(c)
            elif kind == "good":
                worse = any(m + 1.645 * se < 0 for m, se in c.test_diff.values())
                excluded["worse" if worse else "gap"] += 1
        diffs = [c.test_diff for c in counted[kind]]
        if kind == "injected":
            drops = sorted(-d[c.corrupted][0] for d, c in zip(diffs, counted[kind], strict=True))
            summary = (
                f"corrupted group drop on the test set: min {drops[0]:.3f}, "
                f"median {drops[len(drops) // 2]:.3f}, max {drops[-1]:.3f}"
                if drops
                else "none qualified"
            )
        else:
            worst = min((min(m for m, _ in d.values()) for d in diffs), default=float("nan"))
            best = max((min(m for m, _ in d.values()) for d in diffs), default=float("nan"))
            summary = (
                f"their worst group's difference on the test set from {worst:+.4f} to {best:+.4f}; "
                f"not counted: {excluded['worse']} worse on a group, {excluded['gap']} widened "
                f"the gap"
            )
        progress(
            f"{kind}: {len(counted[kind])} of {trained[kind]} trained qualify; {summary} "
            f"({time.perf_counter() - t:.1f} s)"
        )

    by_holdout = {}
    rng = np.random.default_rng([SEED, 2])
    for n in sizes:
        t = time.perf_counter()
        outcomes: dict[str, list[bool]] = {"injected": [], "good": []}
        named, causes = 0, {"group": 0, "window": 0, "gap": 0}
        near_threshold: list[bool] = []
        for kind, candidates in counted.items():
            for c in candidates:
                for _ in range(draws):
                    idx = draw_holdout(holdout, n, rng)
                    report = run_gate(
                        holdout.y[idx],
                        champ_holdout[idx],
                        c.holdout_pred[idx],
                        holdout.groups[idx],
                        windows_for(len(idx), rng),
                        settings,
                    )
                    rejected = not report.passed
                    outcomes[kind].append(rejected)
                    if kind == "injected":
                        near_threshold.append(-c.test_diff[c.corrupted][0] < NEAR)
                    if kind == "injected" and c.corrupted in report.failed_groups:
                        named += 1
                    if kind == "good" and rejected:
                        causes["group"] += any(x.verdict == "fail" for x in report.groups)
                        causes["window"] += bool(report.failed_windows)
                        causes["gap"] += report.gap_failed
        inj, good = outcomes["injected"], outcomes["good"]
        near = [hit for hit, small in zip(inj, near_threshold, strict=True) if small]
        d = sum(inj) / max(1, len(inj))
        f = sum(good) / max(1, len(good))
        by_holdout[str(n)] = {"detection_rate": round(d, 4), "false_reject_rate": round(f, 4)}
        lo_d, hi_d = wilson(sum(inj), len(inj))
        lo_f, hi_f = wilson(sum(good), len(good))
        progress(
            f"holdout {n} per group ({max(1, round(2 * n / PER_WINDOW))} windows): detection "
            f"{d:.3f} [{lo_d:.3f}, {hi_d:.3f}] over {len(inj)} trials (corrupted group named in "
            f"{named}; {sum(near)} of {len(near)} with a drop under {NEAR:.2f}); false rejects "
            f"{f:.3f} [{lo_f:.3f}, {hi_f:.3f}] over {len(good)} trials "
            f"(by a group {causes['group']}, a window {causes['window']}, the gap {causes['gap']}) "
            f"({time.perf_counter() - t:.1f} s)"
        )

    goal = by_holdout.get("1000", {})
    progress(
        f"goal at 1000 per group: detection >= 0.975 and false rejects <= 0.05: "
        f"{goal.get('detection_rate')} and {goal.get('false_reject_rate')}; gate settings "
        f"{settings}; wall {time.perf_counter() - started:.0f} s"
    )
    print(
        json.dumps(
            {
                "bench": "gate",
                "by_holdout": by_holdout,
                "injected": len(counted["injected"]),
                "good": len(counted["good"]),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
