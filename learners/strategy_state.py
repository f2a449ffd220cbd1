"""A strategy's memory between updates: taken out of Avalanche, saved with safetensors, put back.

Restored memory samples get sample keys 0..len(buffer_ids)-1, in `buffer_ids` order, so
`memory_sample_ids(state)` says which id each of those keys stands for, and
`memory_sample_groups(state)` which group (from `buffer_groups`, None where unknown).
Avalanche is imported only by `export_state`/`restore_state`; saving and loading need torch only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

WRONG_EXPERIENCES = "strategy has trained {} experiences, not {}"
WRONG_PLUGINS = "state of {!r} holds {}, strategy has {}"
SAVED_FOR_ANOTHER = "state at {path} belongs to strategy {saved!r}, not {strategy!r}"


@dataclass
class StrategyState:
    """Everything a strategy must remember across updates and restarts.

    `tensors` holds the memories (named "<plugin>.<part>"); `meta` is JSON-able and holds at
    least `experiences_seen` and `buffer_ids` (ids of the samples held, in storage order) and,
    when exported by this version, `buffer_groups` (their groups, null where unknown).
    """

    strategy: str
    experiences_seen: int
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def memory_sample_ids(state: StrategyState) -> dict[int, str]:
    """Sample key -> sample id for the memory samples that `restore_state` puts back."""
    return dict(enumerate(state.meta.get("buffer_ids", [])))


def memory_sample_groups(state: StrategyState) -> dict[int, str | None]:
    """Sample key -> group (None: unknown) for the memory samples `restore_state` puts back."""
    ids = state.meta.get("buffer_ids", [])
    groups = state.meta.get("buffer_groups") or [None] * len(ids)
    if len(groups) != len(ids):
        raise ValueError(f"state lists {len(groups)} buffer groups for {len(ids)} buffer ids")
    return dict(enumerate(groups))


def export_state(
    strategy_name: str,
    strategy,
    experiences_seen: int,
    sample_ids: dict,
    sample_groups: dict | None = None,
) -> StrategyState:
    """Take the memory out of a trained Avalanche strategy.

    `sample_ids` maps the integer sample keys of the data it was trained on (and of any restored
    memory) to the sample ids to list in `meta["buffer_ids"]`; `sample_groups` maps them to
    their groups for `meta["buffer_groups"]` (None, or keys left out: unknown).
    """
    groups_by_key = sample_groups or {}
    from learners.plugin_codecs import CODECS, stateful_plugins

    counter = strategy.clock.train_exp_counter
    if counter != experiences_seen:
        raise ValueError(WRONG_EXPERIENCES.format(counter, experiences_seen))
    tensors: dict[str, torch.Tensor] = {}
    plugins: dict[str, dict[str, Any]] = {}
    buffer_ids: list[str] = []
    buffer_groups: list[str | None] = []
    for name, plugin in stateful_plugins(strategy):
        exported = CODECS[name].export(plugin)
        tensors.update({f"{name}.{part}": value for part, value in exported.tensors.items()})
        plugins[name] = {"samples": len(exported.keys), "state": exported.meta}
        missing = [key for key in exported.keys if key not in sample_ids]
        if missing:
            raise ValueError(f"no sample id given for sample keys {missing[:5]}")
        buffer_ids.extend(str(sample_ids[key]) for key in exported.keys)
        buffer_groups.extend(_group(groups_by_key.get(key)) for key in exported.keys)
    meta = {
        "strategy": strategy_name,
        "experiences_seen": experiences_seen,
        "buffer_ids": buffer_ids,
        "buffer_groups": buffer_groups,
        "plugins": plugins,
    }
    return StrategyState(strategy_name, experiences_seen, tensors, meta)


def restore_state(strategy, state: StrategyState) -> None:
    """Put `state` into a freshly built strategy of the same kind, before its next experience."""
    from learners.plugin_codecs import CODECS, PluginState, stateful_plugins

    found = stateful_plugins(strategy)
    saved = state.meta.get("plugins", {})
    if [name for name, _ in found] != list(saved):
        raise ValueError(WRONG_PLUGINS.format(state.strategy, list(saved), [n for n, _ in found]))
    groups = memory_sample_groups(state)
    offset = 0
    for name, plugin in found:
        samples = saved[name]["samples"]
        prefix = f"{name}."
        keys = list(range(offset, offset + samples))
        part = PluginState(
            tensors={k[len(prefix) :]: v for k, v in state.tensors.items() if k.startswith(prefix)},
            meta=copy.deepcopy(saved[name]["state"]),
            keys=keys,
            groups=[groups.get(key) for key in keys],
        )
        CODECS[name].restore(plugin, part, strategy)
        offset += samples
    # EWC and GEM key their per-experience memories by clock.train_exp_counter and loop over
    # range(train_exp_counter), SI picks its lambda by it; a fresh strategy starts it at 0, so
    # it must count on from here.
    strategy.clock.train_exp_counter = state.experiences_seen


def _group(value: object) -> str | None:
    return None if value is None else str(value)


def save_state(state: StrategyState, path: Path) -> dict:
    """Write the tensors to `path` (safetensors) and return the JSON-able meta for the manifest."""
    # Own, contiguous copies: safetensors refuses tensors that share storage.
    tensors = {name: value.detach().cpu().clone() for name, value in state.tensors.items()}
    save_file(tensors, str(path))
    meta = copy.deepcopy(state.meta)
    meta["strategy"] = state.strategy
    meta["experiences_seen"] = state.experiences_seen
    meta.setdefault("buffer_ids", [])
    return meta


def load_state(path: Path, meta: dict, strategy: str) -> StrategyState:
    """Read back a state written by `save_state`, given the meta it returned."""
    saved_as = meta.get("strategy", strategy)
    if saved_as != strategy:
        raise ValueError(SAVED_FOR_ANOTHER.format(path=path, saved=saved_as, strategy=strategy))
    if "experiences_seen" not in meta:
        raise ValueError(f"meta for the state at {path} lacks 'experiences_seen'")
    tensors = load_file(str(path))
    return StrategyState(strategy, int(meta["experiences_seen"]), tensors, copy.deepcopy(meta))
