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
