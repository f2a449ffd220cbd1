"""Avalanche datasets and experiences built from tensors, each sample tagged with an integer key.

The key is an Avalanche data attribute, so it follows every sample through the subsets and
concatenations that buffers make; that is how we learn which samples a memory holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
from avalanche.benchmarks.utils import DataAttribute, TaskAwareSupervisedClassificationDataset
from avalanche.benchmarks.utils.data_attribute import TaskLabels
from torch import Tensor
from torch.utils.data import TensorDataset

SAMPLE_KEY = "sample_key"


def make_dataset(
    x: Tensor, y: Tensor, keys: Sequence[int], task_labels: Sequence[int] | None = None
) -> TaskAwareSupervisedClassificationDataset:
    """A dataset of float images `x` and labels `y` whose samples carry `keys` (task label 0)."""
    if not len(x) == len(y) == len(keys):
        raise ValueError(f"x, y and keys differ in length: {len(x)}, {len(y)}, {len(keys)}")
    labels = [0] * len(y) if task_labels is None else [int(t) for t in task_labels]
    return TaskAwareSupervisedClassificationDataset(
        [TensorDataset(x, y)],
        data_attributes=[
            DataAttribute(y.tolist(), "targets"),
            TaskLabels(labels),
            DataAttribute([int(k) for k in keys], SAMPLE_KEY),
        ],
    )


def make_experience(x: Tensor, y: Tensor, keys: Sequence[int], index: int) -> DatasetExperience:
    """One training experience holding (x, y), numbered `index` in the learner's history."""
    return DatasetExperience(dataset=make_dataset(x, y, keys), current_experience=index)


def sample_keys(dataset) -> list[int]:
    """The keys of the samples of an Avalanche dataset, in dataset order."""
    return [int(k) for k in getattr(dataset, SAMPLE_KEY)]


def dataset_tensors(dataset) -> dict[str, Tensor]:
    """A non-empty Avalanche dataset read back as tensors: x, y, task labels t and keys."""
    items = [dataset[i] for i in range(len(dataset))]
    return {
        "x": torch.stack([item[0] for item in items]).contiguous(),
        "y": torch.tensor([int(item[1]) for item in items], dtype=torch.int64),
        "t": torch.tensor([int(t) for t in dataset.targets_task_labels], dtype=torch.int64),
        "key": torch.tensor(sample_keys(dataset), dtype=torch.int64),
    }
