"""One incremental update: train a copy of the model on one new experience with a strategy."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from learners.devices import mixed_precision
from learners.experience import make_experience
from learners.frozen_backbone import HeadOnly, backbone_features, head_only
from learners.models import Classifier, to_float
from learners.strategies import build_strategy, needs_groups, quiet_avalanche
from learners.strategy_state import (
    StrategyState,
    export_state,
    memory_sample_groups,
    memory_sample_ids,
    restore_state,
)


@dataclass
class UpdateResult:
    """The trained candidate (a new model), the strategy's new state, and the seconds it took."""

    model: Classifier
    state: StrategyState
    seconds: float


INPUT_LENGTHS_DIFFER = "x, y, sample_ids differ in length: {}, {}, {}"
GROUPS_LENGTH_DIFFERS = "x and groups differ in length: {}, {}"
WRONG_STRATEGY = "state belongs to strategy {state!r}, not {strategy!r}"
# What a strategy's memories hold: images, or a frozen backbone's features (head mode).
STATE_INPUTS = "inputs"
WRONG_INPUTS = (
    "the strategy state remembers {saved}, but this update trains on {kind}: the layers "
    "that train changed since it was saved; start the stream again with a fresh state"
)
NEEDS_GROUPS = (
    "params group_balanced and reweigh_groups need the samples' groups: "
    "pass groups=[...] (one per sample) or switch them off"
)


def _check_inputs(x: Tensor, y: Tensor, sample_ids: list[str], groups: list | None) -> None:
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if y.ndim != 1 or y.dtype != torch.int64:
        raise ValueError(f"y must be int64 of shape (N,), got {y.dtype} {tuple(y.shape)}")
    if not len(x) == len(y) == len(sample_ids):
        raise ValueError(INPUT_LENGTHS_DIFFER.format(len(x), len(y), len(sample_ids)))
    if groups is not None and len(groups) != len(x):
        raise ValueError(GROUPS_LENGTH_DIFFERS.format(len(x), len(groups)))
    if len(x) == 0:
        raise ValueError("cannot train on an empty experience")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's and Python's global RNGs, and put both back afterwards.

    Avalanche draws from both: torch for shuffling and reservoir sampling, Python's `random`
    for A-GEM's memory and the random selection of ParametricBuffer (group-balanced buffers).
    """
    python_state = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            yield
    finally:
        random.setstate(python_state)


def train_update(
    model: Classifier,
    x: Tensor,
    y: Tensor,
    *,
    sample_ids: list[str],
    strategy: str,
    params: dict,
    state: StrategyState | None,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    groups: list[str] | None = None,
    device: torch.device | str = "cpu",
) -> UpdateResult:
    """Train a deep copy of `model` on (x, y) as the next experience of `strategy`.

    `state` is what the previous update returned (None for the first experience); the new
    experience is number `state.experiences_seen`, so per-experience memories keep growing
    across calls and restarts. `groups` (aligned with x) names each sample's group: the
    `group_balanced` and `reweigh_groups` params need it, and buffers remember the groups of
    the samples they keep. Same inputs and seed give bit-identical weights. When only the
    head learns, the strategy trains the head on features computed once
    (:mod:`learners.frozen_backbone`). On a CUDA ``device`` the update trains there under
    bfloat16 autocast; the trained model comes back on the CPU.
    """
    started = time.perf_counter()
    _check_inputs(x, y, sample_ids, groups)
    if state is not None and state.strategy != strategy:
        raise ValueError(WRONG_STRATEGY.format(state=state.strategy, strategy=strategy))
    if groups is None and needs_groups(strategy, params):
        raise ValueError(NEEDS_GROUPS)
    seen = 0 if state is None else state.experiences_seen
    target = torch.device(device)
    candidate = copy.deepcopy(model).to(target)
    was_training = model.training

    frozen = head_only(candidate)
    kind = "features" if frozen else "images"
    saved = "images" if state is None else state.meta.get(STATE_INPUTS, "images")
    if state is not None and saved != kind:
        raise ValueError(WRONG_INPUTS.format(saved=saved, kind=kind))
    inputs = backbone_features(candidate, to_float(x)) if frozen else to_float(x)
    learned: nn.Module = HeadOnly(candidate.head) if frozen else candidate

    with seeded(seed), quiet_avalanche(), mixed_precision(target):
        learner = build_strategy(
            strategy,
            learned,
            params=params,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            device=str(target),
        )
        ids: dict[int, str] = {}
        group_of: dict[int, str | None] = {}
        if state is not None:
            restore_state(learner, state)
            ids = memory_sample_ids(state)
            group_of = memory_sample_groups(state)
        # Restored memory samples hold keys 0..len(ids)-1; the new samples are numbered on.
        first_key = len(ids)
        keys = range(first_key, first_key + len(sample_ids))
        ids.update(zip(keys, sample_ids, strict=True))
        new_groups = [None] * len(keys) if groups is None else [str(g) for g in groups]
        group_of.update(zip(keys, new_groups, strict=True))
        experience = make_experience(
            inputs.contiguous(), y, list(keys), index=seen, groups=new_groups
        )
        learner.train(experience, eval_streams=[])
        new_state = export_state(strategy, learner, seen + 1, ids, group_of)
        new_state.meta[STATE_INPUTS] = kind

    # GDumb retrains a fresh copy of its initial model, so the trained model is the strategy's.
    trained = learner.model
    if frozen:
        candidate.classifier = trained.classifier
        trained = candidate
    trained = trained.cpu()
    trained.train(was_training)
    return UpdateResult(trained, new_state, time.perf_counter() - started)
