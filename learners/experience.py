"""Avalanche datasets and experiences built from tensors, each sample tagged with a key and a group.

The key (an integer) and the group (a string, or None when unknown) are Avalanche data
attributes, so they follow every sample through the subsets and concatenations that buffers
make; that is how we learn which samples a memory holds, and which group each belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
from avalanche.benchmarks.utils import (
    DataAttribute,
    TaskAwareSupervisedClassificationDataset,
    make_avalanche_dataset,
)
from avalanche.benchmarks.utils.data_attribute import TaskLabels, TensorDataAttribute
from avalanche.benchmarks.utils.flat_data import FlatData
from torch import Tensor
from torch.utils.data import TensorDataset

SAMPLE_KEY = "sample_key"
SAMPLE_GROUP = "sample_group"
LOGITS = "logits"
"""The attribute in which DER's buffer keeps each sample's logits (Avalanche's own name)."""


def make_dataset(
    x: Tensor,
    y: Tensor,
    keys: Sequence[int],
    task_labels: Sequence[int] | None = None,
    groups: Sequence[str | None] | None = None,
) -> TaskAwareSupervisedClassificationDataset:
    """A dataset of float images `x` and labels `y` whose samples carry `keys` and `groups`.

    Task labels default to 0 and groups to None (unknown).
    """
    if not len(x) == len(y) == len(keys):
        raise ValueError(f"x, y and keys differ in length: {len(x)}, {len(y)}, {len(keys)}")
    if groups is not None and len(groups) != len(keys):
        raise ValueError(f"groups has {len(groups)} entries for {len(keys)} samples")
    labels = [0] * len(y) if task_labels is None else [int(t) for t in task_labels]
    group_list = [None] * len(y) if groups is None else [_group(g) for g in groups]
    return TaskAwareSupervisedClassificationDataset(
        [TensorDataset(x, y)],
        data_attributes=[
            DataAttribute(y.tolist(), "targets"),
            TaskLabels(labels),
            DataAttribute([int(k) for k in keys], SAMPLE_KEY),
            DataAttribute(group_list, SAMPLE_GROUP),
        ],
    )


def _group(value: object) -> str | None:
    return None if value is None else str(value)


def with_logits(dataset, logits: Sequence[Tensor]):
    """`dataset` with one logits row per sample in getitem, stored the way Avalanche's DER does."""
    return make_avalanche_dataset(
        dataset,
        data_attributes=[
            TensorDataAttribute(
                FlatData([list(logits)], discard_elements_not_in_indices=True),
                name=LOGITS,
                use_in_getitem=True,
            )
        ],
    )


def make_experience(
    x: Tensor,
    y: Tensor,
    keys: Sequence[int],
    index: int,
    groups: Sequence[str | None] | None = None,
) -> DatasetExperience:
    """One training experience holding (x, y), numbered `index` in the learner's history."""
    return DatasetExperience(
        dataset=make_dataset(x, y, keys, groups=groups), current_experience=index
    )


def sample_keys(dataset) -> list[int]:
    """The keys of the samples of an Avalanche dataset, in dataset order."""
    return [int(k) for k in getattr(dataset, SAMPLE_KEY)]


def sample_groups(dataset) -> list[str | None]:
    """The groups of the samples of an Avalanche dataset (None: unknown), in dataset order."""
    return list(getattr(dataset, SAMPLE_GROUP))


def dataset_tensors(dataset) -> dict[str, Tensor]:
    """A non-empty Avalanche dataset read back as tensors: x, y, task labels t, keys and, where
    the dataset carries them (DER's buffer), logits."""
    items = [dataset[i] for i in range(len(dataset))]
    tensors = {
        "x": torch.stack([item[0] for item in items]).contiguous(),
        "y": torch.tensor([int(item[1]) for item in items], dtype=torch.int64),
        "t": torch.tensor([int(t) for t in dataset.targets_task_labels], dtype=torch.int64),
        "key": torch.tensor(sample_keys(dataset), dtype=torch.int64),
    }
    logits = getattr(dataset, LOGITS, None)
    if logits is not None:
        tensors[LOGITS] = torch.stack([logits[i] for i in range(len(dataset))]).contiguous()
    return tensors


def tensors_dataset(tensors: dict[str, Tensor], keys: Sequence[int], groups: Sequence[str | None]):
    """The inverse of `dataset_tensors`: a dataset of x, y, t (and logits, if given)."""
    x, y, t = (tensors[name].clone() for name in ("x", "y", "t"))
    dataset = make_dataset(x, y, keys, task_labels=t.tolist(), groups=groups)
    if LOGITS in tensors:
        dataset = with_logits(dataset, list(tensors[LOGITS].clone()))
    return dataset
