"""What each stateful Avalanche plugin remembers, as tensors + JSON-able meta, and back again.

Avalanche 0.6 has no tensor-only way to save a plugin's memory (its checkpointing pickles), so
each codec below reads and writes the plugin's attributes directly; each says which and why.
A new strategy whose plugin remembers something needs one more codec in `CODECS`.
Sample keys: a codec reports the keys of the samples it holds in storage order, and on restore
receives the keys (and groups) to give those samples back (see `learners.experience`).
DER keeps its memory in the strategy itself rather than in a plugin; its codec applies to it.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import torch
from avalanche.training import DER
from avalanche.training.plugins import (
    AGEMPlugin,
    EWCPlugin,
    GDumbPlugin,
    GEMPlugin,
    LwFPlugin,
    MIRPlugin,
    ReplayPlugin,
    SynapticIntelligencePlugin,
)
from avalanche.training.storage_policy import (
    BalancedExemplarsBuffer,
    ClassBalancedBuffer,
    ExperienceBalancedBuffer,
    ReservoirSamplingBuffer,
    _ParametricSingleBuffer,
)
from avalanche.training.supervised.der import ClassBalancedBufferWithLogits
from avalanche.training.utils import ParamData
from torch import Tensor, nn

from learners.domain_plugins import (
    CPUSynapticIntelligencePlugin,
    DomainMIRPlugin,
    GroupAwareAGEMPlugin,
)
from learners.experience import dataset_tensors, tensors_dataset
from learners.fairness import GroupBalancedBuffer
from learners.keyed_gem import KeyedGEMPlugin

BALANCE_CHANGED = (
    "the saved replay buffer is {saved}-balanced but the strategy's is {kind}-balanced; "
    "changing group_balanced needs a fresh state"
)
NEEDS_SUBCLASS = "{} memories can only be saved from a {}"


@dataclass
class PluginState:
    """One plugin's memory: tensors, JSON-able meta, the keys of the samples it holds and, on
    restore, their groups (None where unknown)."""

    tensors: dict[str, Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    keys: list[int] = field(default_factory=list)
    groups: list[str | None] = field(default_factory=list)


@dataclass(frozen=True)
class Codec:
    """Export/restore functions for plugins of one Avalanche class."""

    plugin_type: type
    export: Callable[[Any], PluginState]
    restore: Callable[[Any, PluginState, Any], None]
    """Called with the plugin, its state and the strategy (for its device and model)."""


# --- Replay buffers (Avalanche storage policies) ------------------------------------------------

_POLICIES: dict[str, type] = {
    "experience": ExperienceBalancedBuffer,
    "class": ClassBalancedBuffer,
    "class_logits": ClassBalancedBufferWithLogits,
    "group": GroupBalancedBuffer,
}


def _policy_kind(policy: BalancedExemplarsBuffer) -> str:
    for kind, policy_type in _POLICIES.items():
        if type(policy) is policy_type:
            return kind
    raise TypeError(f"cannot save a {type(policy).__name__} replay buffer")


def _json_key(key: Hashable) -> Any:
    """A buffer group id as JSON: ints (experience, class), group names, (group, class) pairs."""
    return list(key) if isinstance(key, tuple) else key


def _group_key(value: Any) -> Hashable:
    return tuple(value) if isinstance(value, list) else value


def _export_buffer(policy: BalancedExemplarsBuffer, state: PluginState) -> None:
    """A balanced buffer, group by group: samples, keys and (reservoir) weights, into `state`.

    Besides `buffer_groups` (group id -> buffer), each policy numbers or sizes its groups from
    one more attribute, which is state too: ExperienceBalancedBuffer `_num_exps` (the id of the
    next group), the class-balanced ones `seen_classes`, GroupBalancedBuffer `seen_groups`.
    """
    kind = _policy_kind(policy)
    meta = state.meta
    meta.update({"policy": kind, "groups": []})
    if kind == "experience":
        meta["num_exps"] = policy._num_exps
    elif kind in ("class", "class_logits"):
        meta["seen_classes"] = [int(c) for c in policy.seen_classes]
    else:
        meta["seen_groups"] = [_json_key(g) for g in policy.seen_groups]
        meta["by_class"] = policy.by_class
        meta["with_logits"] = policy.with_logits
    for i, (group_key, group) in enumerate(policy.buffer_groups.items()):
        size = len(group.buffer)
        entry = {"group": _json_key(group_key), "max_size": group.max_size, "size": size}
        meta["groups"].append(entry)
        if isinstance(group, ReservoirSamplingBuffer):
            # Reservoir weights decide which samples survive later resizes, so they are state.
            state.tensors[f"g{i}.weights"] = group._buffer_weights.detach().cpu().clone()
        if size:
            data = dataset_tensors(group.buffer)
            state.keys.extend(data.pop("key").tolist())
            state.tensors.update({f"g{i}.{name}": value for name, value in data.items()})


def _widened_logits(tensors: dict[str, Tensor], outputs: int | None) -> dict[str, Tensor]:
    """DER's stored logits, widened to a head that grew since (a class added to the stream):
    each sample's new logits are its lowest one, as it is none of the new classes."""
    logits = tensors.get("logits")
    if outputs is None or logits is None or logits.shape[1] >= outputs:
        return tensors
    low = logits.min(dim=1, keepdim=True).values
    extra = low.expand(-1, outputs - logits.shape[1])
    return {**tensors, "logits": torch.cat([logits, extra], dim=1)}


def _restore_buffer(
    policy: BalancedExemplarsBuffer, state: PluginState, outputs: int | None = None
) -> None:
    """Rebuild the groups of `policy` from `state` (stored logits widened to `outputs`)."""
    meta = state.meta
    kind = _policy_kind(policy)
    # States saved before there were other policies are the replay's experience-balanced one.
    saved = meta.get("policy", "experience")
    if saved != kind:
        raise ValueError(BALANCE_CHANGED.format(saved=saved, kind=kind))
    if kind == "experience":
        policy._num_exps = meta["num_exps"]
    elif kind in ("class", "class_logits"):
        # A set: insert in the saved iteration order (for small class ids, that order is the
        # ids' own, so the restored set iterates the same and sizes its groups the same).
        policy.seen_classes = set()
        for class_id in meta["seen_classes"]:
            policy.seen_classes.add(class_id)
    else:
        if (policy.by_class, policy.with_logits) != (meta["by_class"], meta["with_logits"]):
            raise ValueError("the saved group-balanced buffer was grouped differently")
        policy.seen_groups.update(_group_key(g) for g in meta["seen_groups"])
    policy.buffer_groups = {}
    offset = 0
    for i, group in enumerate(meta["groups"]):
        if kind == "group":
            # ParametricBuffer's per-group buffer is private; it holds only its dataset.
            buffer = _ParametricSingleBuffer(group["max_size"], policy.selection_strategy)
        else:
            buffer = ReservoirSamplingBuffer(group["max_size"])
            buffer._buffer_weights = state.tensors[f"g{i}.weights"].clone()
        size = group["size"]
        if size:
            tensors = _widened_logits(_parts(state, f"g{i}."), outputs)
            part = slice(offset, offset + size)
            buffer.buffer = tensors_dataset(tensors, state.keys[part], state.groups[part])
        offset += size
        policy.buffer_groups[_group_key(group["group"])] = buffer


def _parts(state: PluginState, prefix: str) -> dict[str, Tensor]:
    """The tensors named `prefix` + part, by part."""
    return {
        name[len(prefix) :]: value
        for name, value in state.tensors.items()
        if name.startswith(prefix)
    }


def _export_storage(plugin) -> PluginState:
    """A plugin (or DER) whose memory is its `storage_policy`: Replay, MIR, DER."""
    state = PluginState()
    _export_buffer(plugin.storage_policy, state)
    return state


def _restore_storage(plugin, state: PluginState, strategy) -> None:
    head = getattr(strategy.model, "head", None)
    _restore_buffer(plugin.storage_policy, state, getattr(head, "out_features", None))


def _restore_mir(plugin: DomainMIRPlugin, state: PluginState, _strategy) -> None:
    """The buffer, then MIR's replay loader over it, as after its last experience."""
    _restore_buffer(plugin.storage_policy, state)
    plugin.reset_loader()


# --- Models kept by a plugin ---------------------------------------------------------------------


def _export_model(model: nn.Module, prefix: str, state: PluginState) -> None:
    state.tensors.update(
        {
            f"{prefix}.{name}": value.detach().cpu().clone()
            for name, value in model.state_dict().items()
        }
    )


def _grown(saved: Tensor, now: Tensor) -> Tensor:
    """A saved head parameter with fewer rows than the model's now (classes were added since):
    the saved rows, then the model's rows for the new classes."""
    if saved.shape == now.shape or saved.shape[1:] != now.shape[1:] or len(saved) > len(now):
        return saved
    grown = now.detach().cpu().clone()
    grown[: len(saved)] = saved
    return grown


def _restore_model(strategy, prefix: str, state: PluginState) -> nn.Module:
    """A copy of the strategy's model (for its architecture) holding the saved weights."""
    model = copy.deepcopy(strategy.model)
    now = model.state_dict()
    saved = _parts(state, f"{prefix}.")
    model.load_state_dict(
        {name: _grown(value, now[name]) if name in now else value for name, value in saved.items()}
    )
    return model.to(strategy.device)


def _export_gdumb(plugin: GDumbPlugin) -> PluginState:
    """GDumb's buffer, and `init_model`: the model every later experience retrains from."""
    state = _export_storage(plugin)
    state.meta["init_model"] = plugin.init_model is not None
    if plugin.init_model is not None:
        _export_model(plugin.init_model, "init", state)
    return state


def _restore_gdumb(plugin: GDumbPlugin, state: PluginState, strategy) -> None:
    _restore_buffer(plugin.storage_policy, state)
    # GDumb makes init_model a copy of the model at its first experience and restarts every
    # later experience from a copy of it, so a restored init_model must be set here.
    plugin.init_model = None
    if state.meta["init_model"]:
        plugin.init_model = _restore_model(strategy, "init", state)


def _export_lwf(plugin: LwFPlugin) -> PluginState:
    """LwF's teacher (`prev_model`), experience count and classes seen per task label."""
    lwf = plugin.lwf
    state = PluginState(
        meta={
            "expcount": lwf.expcount,
            "prev_classes_by_task": {
                str(task): sorted(int(c) for c in classes)
                for task, classes in lwf.prev_classes_by_task.items()
            },
            "prev_model": lwf.prev_model is not None,
        }
    )
    if lwf.prev_model is not None:
        state.meta["prev_model_training"] = lwf.prev_model.training
        _export_model(lwf.prev_model, "prev", state)
    return state


def _restore_lwf(plugin: LwFPlugin, state: PluginState, strategy) -> None:
    lwf = plugin.lwf
    lwf.expcount = state.meta["expcount"]
    # Classes are small ints, so a set rebuilt from the sorted list iterates as the original.
    lwf.prev_classes_by_task = defaultdict(
        set, {int(t): set(c) for t, c in state.meta["prev_classes_by_task"].items()}
    )
    lwf.prev_model = None
    if state.meta["prev_model"]:
        lwf.prev_model = _restore_model(strategy, "prev", state)
        lwf.prev_model.train(state.meta["prev_model_training"])


# --- Parameter dictionaries: EWC, SI -------------------------------------------------------------


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


def _restore_ewc(plugin: EWCPlugin, state: PluginState, strategy) -> None:
    """Put back EWC's per-experience dicts, keyed by the experience counter as Avalanche does."""
    device = strategy.device
    plugin.saved_params = _restore_param_dicts(state, "saved_params", device)
    plugin.importances = _restore_param_dicts(state, "importances", device)


# SI's per-parameter data: ewc_data[0] (parameters at the end of the last experience),
# ewc_data[1] (importances) and syn_data["cum_trajectory"] (path integral summed over all
# experiences) carry over; the other syn_data entries are scratch, overwritten before use.
_SI_SCRATCH = {"old_theta": "old_theta_", "new_theta": "new_theta_", "grad": "grad"}


def _export_si(plugin: SynapticIntelligencePlugin) -> PluginState:
    theta, importance = plugin.ewc_data
    state = PluginState(meta={"params": list(theta)})
    for name in theta:
        state.tensors[f"theta.{name}"] = theta[name].data.detach().cpu().clone()
        state.tensors[f"importance.{name}"] = importance[name].data.detach().cpu().clone()
        cumulative = plugin.syn_data["cum_trajectory"][name].data
        state.tensors[f"cum_trajectory.{name}"] = cumulative.detach().cpu().clone()
    return state


def _restore_si(plugin: SynapticIntelligencePlugin, state: PluginState, _strategy) -> None:
    """Refill SI's dicts as `create_syn_data` would have made them, with the saved values.

    SI only creates its dicts for parameters it has not seen (keyed by ewc_data[0]), so the
    scratch entries must exist too; SI keeps all of them on the CPU.
    """
    theta, importance = plugin.ewc_data
    for name in state.meta["params"]:
        saved = state.tensors[f"theta.{name}"]
        theta[name] = ParamData(name, init_tensor=saved.clone())
        importance[name] = ParamData(
            f"imp_{name}", init_tensor=state.tensors[f"importance.{name}"].clone()
        )
        plugin.syn_data["cum_trajectory"][name] = ParamData(
            f"cum_trajectory_{name}", init_tensor=state.tensors[f"cum_trajectory.{name}"].clone()
        )
        plugin.syn_data["trajectory"][name] = ParamData(f"trajectory_{name}", saved.shape)
        for part, label in _SI_SCRATCH.items():
            plugin.syn_data[part][name] = ParamData(f"{label}{name}", saved.shape)


# --- Episodic memories: GEM, A-GEM --------------------------------------------------------------


def _export_gem(plugin: KeyedGEMPlugin) -> PluginState:
    """GEM's per-experience memories (`memory_x/y/tid`) and the keys of their samples."""
    state = PluginState(meta={"experiences": sorted(plugin.memory_x)})
    for exp in state.meta["experiences"]:
        state.tensors[f"e{exp}.x"] = plugin.memory_x[exp].detach().cpu().clone()
        state.tensors[f"e{exp}.y"] = plugin.memory_y[exp].detach().cpu().clone()
        state.tensors[f"e{exp}.t"] = plugin.memory_tid[exp].detach().cpu().clone()
        state.keys.extend(plugin.memory_key[exp].tolist())
    return state


def _restore_gem(plugin: KeyedGEMPlugin, state: PluginState, _strategy) -> None:
    """Put back GEM's per-experience memories (Avalanche moves them to the device when used)."""
    offset = 0
    for exp in state.meta["experiences"]:
        plugin.memory_x[exp] = state.tensors[f"e{exp}.x"].clone()
        plugin.memory_y[exp] = state.tensors[f"e{exp}.y"].clone()
        plugin.memory_tid[exp] = state.tensors[f"e{exp}.t"].clone()
        size = len(plugin.memory_x[exp])
        plugin.memory_key[exp] = torch.tensor(state.keys[offset : offset + size])
        offset += size


def _export_agem(plugin: AGEMPlugin) -> PluginState:
    """A-GEM's `buffers`: one dataset of samples per experience, in order."""
    state = PluginState(meta={"sizes": [len(buffer) for buffer in plugin.buffers]})
    for i, buffer in enumerate(plugin.buffers):
        if len(buffer):
            data = dataset_tensors(buffer)
            state.keys.extend(data.pop("key").tolist())
            state.tensors.update({f"e{i}.{name}": value for name, value in data.items()})
    return state


def _restore_agem(plugin: GroupAwareAGEMPlugin, state: PluginState, _strategy) -> None:
    """The per-experience datasets, then A-GEM's memory loader over them."""
    plugin.buffers = []
    offset = 0
    for i, size in enumerate(state.meta["sizes"]):
        part = slice(offset, offset + size)
        tensors = _parts(state, f"e{i}.")
        plugin.buffers.append(tensors_dataset(tensors, state.keys[part], state.groups[part]))
        offset += size
    if plugin.buffers:
        plugin.reset_loader()


CODECS: dict[str, Codec] = {
    "replay": Codec(ReplayPlugin, _export_storage, _restore_storage),
    "ewc": Codec(EWCPlugin, _export_ewc, _restore_ewc),
    "gem": Codec(KeyedGEMPlugin, _export_gem, _restore_gem),
    "agem": Codec(GroupAwareAGEMPlugin, _export_agem, _restore_agem),
    "lwf": Codec(LwFPlugin, _export_lwf, _restore_lwf),
    "si": Codec(CPUSynapticIntelligencePlugin, _export_si, _restore_si),
    "gdumb": Codec(GDumbPlugin, _export_gdumb, _restore_gdumb),
    "der": Codec(DER, _export_storage, _restore_storage),
    "mir": Codec(DomainMIRPlugin, _export_storage, _restore_mir),
}

# Base classes whose memory only the subclass above can save or restore faithfully.
_NEEDS_SUBCLASS = {
    GEMPlugin: KeyedGEMPlugin,
    AGEMPlugin: GroupAwareAGEMPlugin,
    MIRPlugin: DomainMIRPlugin,
    SynapticIntelligencePlugin: CPUSynapticIntelligencePlugin,
}


def stateful_plugins(strategy) -> list[tuple[str, Any]]:
    """(codec name, plugin) for each plugin of `strategy` (or DER itself) whose memory we save."""
    found = []
    for plugin in [strategy, *strategy.plugins]:
        for base, needed in _NEEDS_SUBCLASS.items():
            if isinstance(plugin, base) and not isinstance(plugin, needed):
                raise TypeError(NEEDS_SUBCLASS.format(type(plugin).__name__, needed.__name__))
        for name, codec in CODECS.items():
            if isinstance(plugin, codec.plugin_type):
                found.append((name, plugin))
                break
    return found
