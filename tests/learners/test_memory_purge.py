"""Purging deleted samples from saved strategy states: the purged state restores and trains."""

from __future__ import annotations

import pytest
import torch
from training_runs import trained, update

from learners.memory_purge import purge_samples
from learners.strategies import build_strategy
from learners.strategy_state import (
    StrategyState,
    export_state,
    memory_sample_ids,
    restore_state,
)


def _held(state: StrategyState) -> list[str]:
    return list(state.meta["buffer_ids"])


@pytest.mark.parametrize(
    ("strategy", "params"),
    [
        ("replay", {"mem_size": 40}),
        ("replay", {"mem_size": 40, "group_balanced": True}),
        ("der", {"mem_size": 40}),
        ("gem", {"patterns_per_exp": 30}),
        ("agem", {"patterns_per_exp": 30}),
        ("gdumb", {"mem_size": 40}),
        ("mir", {"mem_size": 40}),
    ],
)
def test_a_purged_state_forgets_the_samples_restores_and_trains(
    strategy, params, model, exp_a, exp_b
) -> None:
    groups = [f"g{i % 2}" for i in range(len(exp_a.ids))]
    first = update(model, exp_a, strategy, None, groups=groups, **params)
    held = _held(first.state)
    assert held
    doomed = set(held[::3])

    result = purge_samples(first.state, doomed | {"not-held"})

    state = result.state
    assert result.removed == len(doomed)
    assert _held(state) == [sid for sid in held if sid not in doomed]
    assert len(state.meta["buffer_groups"]) == len(state.meta["buffer_ids"])
    assert sum(p["samples"] for p in state.meta["plugins"].values()) == len(_held(state))
    assert _held(first.state) == held  # the input is left as it was
    # It restores into a fresh strategy and exports the same memory back ...
    fresh = build_strategy(strategy, model, params=params, epochs=1, batch_size=32, lr=0.05)
    restore_state(fresh, state)
    again = export_state(strategy, fresh, 1, memory_sample_ids(state))
    assert again.meta["buffer_ids"] == _held(state)
    for name, value in again.tensors.items():
        assert torch.equal(value, state.tensors[name]), name
    # ... and trains on from it; what it keeps afterwards never names a deleted sample.
    groups_b = [f"g{i % 2}" for i in range(len(exp_b.ids))]
    second = update(first.model, exp_b, strategy, state, groups=groups_b, seed=1, **params)
    assert second.state.experiences_seen == 2
    assert not doomed & set(_held(second.state))


def test_an_emptied_gem_experience_is_skipped_by_the_next_update(model, exp_a, exp_b) -> None:
    first = update(model, exp_a, "gem", None, patterns_per_exp=20)
    result = purge_samples(first.state, set(_held(first.state)))
    assert _held(result.state) == []
    assert len(result.state.tensors["gem.e0.x"]) == 0
    second = update(first.model, exp_b, "gem", result.state, seed=1, patterns_per_exp=20)
    assert second.state.experiences_seen == 2
    assert all(torch.isfinite(p).all() for p in second.model.parameters())
    assert set(_held(second.state)) <= set(exp_b.ids)


def test_an_emptied_agem_buffer_is_dropped(model, exp_a) -> None:
    first = update(model, exp_a, "agem", None, patterns_per_exp=20)
    result = purge_samples(first.state, set(_held(first.state)))
    agem = result.state.meta["plugins"]["agem"]
    assert (agem["samples"], agem["state"]["sizes"]) == (0, [])
    assert not any(k.startswith("agem.e") for k in result.state.tensors)


def test_samples_not_held_leave_the_state_as_it_is(model, exp_a) -> None:
    learner, ids = trained("ewc", model, exp_a, {})
    state = export_state("ewc", learner, 1, ids)
    result = purge_samples(state, {"a1", "a2"})
    assert result.removed == 0 and result.state is state
