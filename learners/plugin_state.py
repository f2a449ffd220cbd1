"""What each stateful Avalanche plugin remembers, as tensors + JSON-able meta, and back again.

Avalanche 0.6 has no tensor-only way to save a plugin's memory (its checkpointing pickles), so
each codec below reads and writes the plugin's attributes directly; each says which and why.
A new strategy whose plugin remembers something needs one more codec in `CODECS`.
Sample keys: a codec reports the keys of the samples it holds in storage order, and on restore
receives the keys to give those samples back (see `learners.experience`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from avalanche.training.plugins import EWCPlugin, GEMPlugin, ReplayPlugin
from avalanche.training.storage_policy import ExperienceBalancedBuffer, ReservoirSamplingBuffer
from avalanche.training.utils import ParamData
from torch import Tensor

from learners.experience import dataset_tensors, make_dataset
from learners.keyed_gem import KeyedGEMPlugin


@dataclass
class PluginState:
    """One plugin's memory: tensors, JSON-able meta and the keys of the samples it holds."""

    tensors: dict[str, Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    keys: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Codec:
    """Export/restore functions for plugins of one Avalanche class."""

    plugin_type: type
    export: Callable[[Any], PluginState]
    restore: Callable[[Any, PluginState, torch.device], None]


def _export_replay(plugin: ReplayPlugin) -> PluginState:
    """The experience-balanced buffer, group by group: samples, keys and reservoir weights."""
    policy = plugin.storage_policy
    if not isinstance(policy, ExperienceBalancedBuffer):
        raise TypeError(f"cannot save a {type(policy).__name__} replay buffer")
    state = PluginState(meta={"num_exps": policy._num_exps, "groups": []})
    for i, (group_key, group) in enumerate(policy.buffer_groups.items()):
        size = len(group.buffer)
        state.meta["groups"].append({"group": group_key, "max_size": group.max_size, "size": size})
        # Reservoir weights decide which samples survive later resizes, so they are state too.
        state.tensors[f"g{i}.weights"] = group._buffer_weights.detach().cpu().clone()
        if size:
            data = dataset_tensors(group.buffer)
            state.keys.extend(data.pop("key").tolist())
            state.tensors.update({f"g{i}.{name}": value for name, value in data.items()})
    return state


def _restore_replay(plugin: ReplayPlugin, state: PluginState, _device: torch.device) -> None:
    """Rebuild the buffer groups; `_num_exps` must be restored too, as it numbers new groups."""
    policy = plugin.storage_policy
    policy._num_exps = state.meta["num_exps"]
    policy.buffer_groups = {}
    offset = 0
    for i, group in enumerate(state.meta["groups"]):
        buffer = ReservoirSamplingBuffer(group["max_size"])
        buffer._buffer_weights = state.tensors[f"g{i}.weights"].clone()
        size = group["size"]
        if size:
            keys = state.keys[offset : offset + size]
            x, y, t = (state.tensors[f"g{i}.{name}"].clone() for name in ("x", "y", "t"))
            buffer.buffer = make_dataset(x, y, keys, task_labels=t.tolist())
        offset += size
        policy.buffer_groups[group["group"]] = buffer


def _export_param_dicts(dicts: dict[int, dict[str, ParamData]], kind: str, state: PluginState):
    names: dict[str, list[str]] = {}
    for exp, params in sorted(dicts.items()):
        names[str(exp)] = list(params)
        for name, value in params.items():
            state.tensors[f"e{exp}.{kind}.{name}"] = value.data.detach().cpu().clone()
    state.meta[kind] = names


def _restore_param_dicts(
    state: PluginState, kind: str, device: torch.device
) -> defaultdict[int, dict[str, ParamData]]:
    restored: defaultdict[int, dict[str, ParamData]] = defaultdict(dict)
    for exp, names in state.meta[kind].items():
        restored[int(exp)] = {
            name: ParamData(
                name,
                init_tensor=state.tensors[f"e{exp}.{kind}.{name}"].clone().to(device),
                device=device,
            )
            for name in names
        }
    return restored


def _export_ewc(plugin: EWCPlugin) -> PluginState:
    """EWC's per-experience parameter snapshots (`saved_params`) and Fisher `importances`."""
    state = PluginState()
    _export_param_dicts(plugin.saved_params, "saved_params", state)
    _export_param_dicts(plugin.importances, "importances", state)
    return state


def _restore_ewc(plugin: EWCPlugin, state: PluginState, device: torch.device) -> None:
    """Put back EWC's per-experience dicts, keyed by the experience counter as Avalanche does."""
    plugin.saved_params = _restore_param_dicts(state, "saved_params", device)
    plugin.importances = _restore_param_dicts(state, "importances", device)


def _export_gem(plugin: KeyedGEMPlugin) -> PluginState:
    """GEM's per-experience memories (`memory_x/y/tid`) and the keys of their samples."""
    state = PluginState(meta={"experiences": sorted(plugin.memory_x)})
    for exp in state.meta["experiences"]:
        state.tensors[f"e{exp}.x"] = plugin.memory_x[exp].detach().cpu().clone()
        state.tensors[f"e{exp}.y"] = plugin.memory_y[exp].detach().cpu().clone()
        state.tensors[f"e{exp}.t"] = plugin.memory_tid[exp].detach().cpu().clone()
        state.keys.extend(plugin.memory_key[exp].tolist())
    return state


def _restore_gem(plugin: KeyedGEMPlugin, state: PluginState, _device: torch.device) -> None:
    """Put back GEM's per-experience memories (Avalanche moves them to the device when used)."""
    offset = 0
    for exp in state.meta["experiences"]:
        plugin.memory_x[exp] = state.tensors[f"e{exp}.x"].clone()
        plugin.memory_y[exp] = state.tensors[f"e{exp}.y"].clone()
        plugin.memory_tid[exp] = state.tensors[f"e{exp}.t"].clone()
        size = len(plugin.memory_x[exp])
        plugin.memory_key[exp] = torch.tensor(state.keys[offset : offset + size])
        offset += size


CODECS: dict[str, Codec] = {
    "replay": Codec(ReplayPlugin, _export_replay, _restore_replay),
    "ewc": Codec(EWCPlugin, _export_ewc, _restore_ewc),
    "gem": Codec(KeyedGEMPlugin, _export_gem, _restore_gem),
}


def stateful_plugins(strategy) -> list[tuple[str, Any]]:
    """(codec name, plugin) for each plugin of `strategy` whose memory we know how to save."""
    found = []
    for plugin in strategy.plugins:
        if isinstance(plugin, GEMPlugin) and not isinstance(plugin, KeyedGEMPlugin):
            raise TypeError("GEM memories can only be saved from a KeyedGEMPlugin")
        for name, codec in CODECS.items():
            if isinstance(plugin, codec.plugin_type):
                found.append((name, plugin))
                break
    return found
