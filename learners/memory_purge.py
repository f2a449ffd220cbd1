"""Deleting samples from a saved strategy state: plain tensors in, plain tensors out.

A state's memories are laid out by :mod:`learners.plugin_codecs`; the samples they hold are
listed, in storage order, by ``meta["buffer_ids"]`` (and ``buffer_groups``), plugin after
plugin in ``meta["plugins"]`` order, each plugin with its ``samples`` count. Within a plugin
the samples come in *segments*, each a prefix whose every tensor has one row per sample:

- replay buffers (replay, der, mir, gdumb): ``g{i}.*`` for ``meta.groups[i]`` (its ``size``),
  the reservoir weights ``g{i}.weights`` included;
- gem: ``e{exp}.x/y/t`` for each of ``meta.experiences`` (an experience emptied here keeps
  its entry with no rows: GEM indexes memories by experience number, and
  :class:`learners.keyed_gem.KeyedGEMPlugin` skips the empty ones);
- agem: ``e{i}.*`` for each of ``meta.sizes`` (an emptied buffer is dropped and the rest
  renumbered, since A-GEM draws from every buffer it has).

Tensors that were computed *from* samples rather than holding them (EWC and SI importances,
LwF's teacher, GDumb's initial model) cannot give a sample back; they are kept as they are.
No Avalanche import: a state is purged without building a strategy.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch

from learners.strategy_state import StrategyState

BUFFER_PLUGINS = frozenset({"replay", "der", "mir", "gdumb"})
CANNOT_PURGE = "state of {strategy!r}: plugin {plugin!r} holds {n} samples in a layout unknown here"
COUNTS_DIFFER = "state of {strategy!r} lists {ids} buffer ids but its plugins hold {held} samples"


@dataclass(frozen=True)
class Purged:
    """A state without the deleted samples, and how many of its samples were removed."""

    state: StrategyState
    removed: int


def purge_samples(state: StrategyState, sample_ids: Collection[str]) -> Purged:
    """``state`` without the samples whose ids are in ``sample_ids`` (the input is untouched).

    Counts (``samples``, group ``size``, ``sizes``), ``buffer_ids`` and ``buffer_groups`` are
    updated together, so the result restores into a fresh strategy like any saved state.
    """
    doomed = set(sample_ids)
    ids = [str(i) for i in state.meta.get("buffer_ids", [])]
    drop = [sid in doomed for sid in ids]
    if not any(drop):
        return Purged(state, 0)
    meta = copy.deepcopy(state.meta)
    plugins: dict[str, dict[str, Any]] = meta.get("plugins", {})
    held = sum(int(p["samples"]) for p in plugins.values())
    if held != len(ids):
        raise ValueError(COUNTS_DIFFER.format(strategy=state.strategy, ids=len(ids), held=held))
    tensors = dict(state.tensors)
    offset = 0
    for name, info in plugins.items():
        samples = int(info["samples"])
        flags = drop[offset : offset + samples]
        if any(flags):
            _purge_plugin(state.strategy, name, info, tensors, flags)
        info["samples"] = samples - sum(flags)
        offset += samples
    meta["buffer_ids"] = [sid for sid, gone in zip(ids, drop, strict=True) if not gone]
    if "buffer_groups" in meta and meta["buffer_groups"] is not None:
        groups = list(meta["buffer_groups"])
        meta["buffer_groups"] = [g for g, gone in zip(groups, drop, strict=True) if not gone]
    purged = StrategyState(state.strategy, state.experiences_seen, tensors, meta)
    return Purged(purged, sum(drop))


def _purge_plugin(
    strategy: str,
    name: str,
    info: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    flags: list[bool],
) -> None:
    """Remove the flagged samples (in storage order) from plugin ``name``'s tensors and meta."""
    meta = info["state"]
    if name in BUFFER_PLUGINS:
        segments = [(f"g{i}.", int(group["size"])) for i, group in enumerate(meta["groups"])]
        kept = _cut(tensors, name, segments, flags)
        for group, size in zip(meta["groups"], kept, strict=True):
            group["size"] = size
    elif name == "gem":
        segments = [(f"e{exp}.", len(tensors[f"{name}.e{exp}.x"])) for exp in meta["experiences"]]
        _cut(tensors, name, segments, flags)
    elif name == "agem":
        segments = [(f"e{i}.", int(size)) for i, size in enumerate(meta["sizes"])]
        kept = _cut(tensors, name, segments, flags)
        _renumber_agem(tensors, name, kept)
        meta["sizes"] = [size for size in kept if size]
    else:
        raise ValueError(CANNOT_PURGE.format(strategy=strategy, plugin=name, n=len(flags)))


def _cut(
    tensors: dict[str, torch.Tensor],
    plugin: str,
    segments: list[tuple[str, int]],
    flags: list[bool],
) -> list[int]:
    """Drop the flagged rows of each segment's tensors; the sizes the segments keep."""
    if sum(size for _, size in segments) != len(flags):
        raise ValueError(f"plugin {plugin!r}: its segments do not add up to its samples")
    kept, offset = [], 0
    for prefix, size in segments:
        keep = torch.tensor([not f for f in flags[offset : offset + size]], dtype=torch.bool)
        full = f"{plugin}.{prefix}"
        for key in [k for k in tensors if k.startswith(full)]:
            value = tensors[key]
            if len(value) != size:
                raise ValueError(f"{key} has {len(value)} rows, not the {size} of its segment")
            tensors[key] = value[keep].clone()
        kept.append(int(keep.sum()))
        offset += size
    return kept


_AGEM_PART = re.compile(r"e(\d+)\.(.+)")


def _renumber_agem(tensors: dict[str, torch.Tensor], plugin: str, kept: list[int]) -> None:
    """A-GEM's buffers ``e{i}.*`` without the emptied ones, numbered 0.. again."""
    new_index: dict[int, int] = {}
    for i, size in enumerate(kept):
        if size:
            new_index[i] = len(new_index)
    prefix = f"{plugin}."
    parts = {k: v for k, v in tensors.items() if k.startswith(prefix)}
    for key in parts:
        del tensors[key]
    for key, value in parts.items():
        match = _AGEM_PART.fullmatch(key[len(prefix) :])
        if match is None:
            tensors[key] = value
            continue
        old = int(match[1])
        if old in new_index:
            tensors[f"{prefix}e{new_index[old]}.{match[2]}"] = value
