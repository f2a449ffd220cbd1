"""GEM's plugin, extended to remember which samples (by key) each experience's memory holds."""

from __future__ import annotations

import torch
from avalanche.benchmarks.utils import DataAttribute
from avalanche.training.plugins import GEMPlugin
from torch import Tensor

from learners.experience import SAMPLE_KEY, sample_keys
from learners.fairness import balanced_subset


class KeyedGEMPlugin(GEMPlugin):
    """GEMPlugin plus `memory_key[t]`: the sample keys of `memory_x[t]`, row for row.

    With `group_balanced`, each experience's memory is first narrowed to a group-balanced
    subset of `patterns_per_experience` samples (see `learners.fairness.balanced_subset`).
    """

    # GEMPlugin's memories by experience (declared here for the type checker).
    memory_x: dict[int, Tensor]
    memory_y: dict[int, Tensor]
    memory_tid: dict[int, Tensor]

    def __init__(
        self, patterns_per_experience: int, memory_strength: float, group_balanced: bool = False
    ) -> None:
        super().__init__(patterns_per_experience, memory_strength)
        self.group_balanced = group_balanced
        self.memory_key: dict[int, Tensor] = {}

    @torch.no_grad()
    def update_memory(self, dataset, t: int, batch_size: int) -> None:
        """Let Avalanche pick experience `t`'s memory, and record the keys of what it picked."""
        if self.group_balanced:
            dataset = balanced_subset(dataset, self.patterns_per_experience)
        # GEMPlugin.update_memory keeps x, y and the last field of each item (the task label),
        # but not which samples those were. We hand it the same dataset with the sample key
        # appended as the last field, so Avalanche chooses the memory exactly as usual; then we
        # move that column to memory_key and look the real task labels up by key.
        keys = sample_keys(dataset)
        tagged = DataAttribute(keys, SAMPLE_KEY, use_in_getitem=True)
        super().update_memory(dataset.update_data_attribute(SAMPLE_KEY, tagged), t, batch_size)
        self.memory_key[t] = self.memory_tid[t].to(torch.int64)
        position = {key: i for i, key in enumerate(keys)}
        task_labels = dataset.targets_task_labels
        self.memory_tid[t] = torch.tensor(
            [int(task_labels[position[int(k)]]) for k in self.memory_key[t]], dtype=torch.int64
        )

    def before_training_iteration(self, strategy, **kwargs) -> None:
        """GEM's reference gradients, one per experience whose memory still holds samples.

        Avalanche's GEM reads ``memory_x[t]`` for every experience so far; a memory emptied
        by a deletion of its samples (:mod:`learners.memory_purge`) has no gradient to give,
        so it is left out of the constraints (``G`` gets one row fewer)."""
        counter = strategy.clock.train_exp_counter
        held = {t: self.memory_x[t] for t in range(counter) if len(self.memory_x.get(t, ()))}
        if len(held) == counter:
            super().before_training_iteration(strategy, **kwargs)
            return
        saved_x, saved_y, saved_t = self.memory_x, self.memory_y, self.memory_tid
        # Avalanche's loop over range(counter), run on the held memories numbered 0.. again.
        self.memory_x = dict(enumerate(held.values()))
        self.memory_y = dict(enumerate(saved_y[t] for t in held))
        self.memory_tid = dict(enumerate(saved_t[t] for t in held))
        try:
            strategy.clock.train_exp_counter = len(held)
            if held:
                super().before_training_iteration(strategy, **kwargs)
            else:
                parameters = sum(p.numel() for p in strategy.model.parameters())
                self.G = torch.zeros((0, parameters), device=strategy.device)
        finally:
            strategy.clock.train_exp_counter = counter
            self.memory_x, self.memory_y, self.memory_tid = saved_x, saved_y, saved_t
