"""Fairness-aware training options, valid for every strategy (see `learners.strategies`).

* `group_balanced`: replay buffers keep the same share of memory for every group (or every
  (group, class) pair where the strategy's buffer is class-balanced), through a
  `GroupBalancedBuffer`, an Avalanche `ParametricBuffer` grouped by the samples' group.
* `reweigh_groups`: reweighing (Kamiran & Calders, 2012): each sample of the training data
  weighs in the loss by the inverse frequency of its group in that data, normalised so the
  weights average 1; `ReweighGroupsPlugin` does it for any strategy.

Samples carry their group in the `sample_group` data attribute (see `learners.experience`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from avalanche.benchmarks.utils import DataAttribute
from avalanche.benchmarks.utils.data_loader import MultiDatasetDataLoader
from avalanche.training.plugins import SupervisedPlugin
from avalanche.training.storage_policy import ParametricBuffer
from avalanche.training.supervised.der import compute_dataset_logits

from learners.experience import SAMPLE_GROUP, sample_groups, with_logits

SAMPLE_WEIGHT = "sample_weight"
NO_WEIGHTS = "before_backward ran without before_training_iteration taking the weights"


def group_weights(groups: Sequence[Hashable]) -> dict[Hashable, float]:
    """Weight of each group: n / (number of groups * samples in the group), so that the
    per-sample weights average 1 and every group weighs the same in total."""
    counts = Counter(groups)
    return {group: len(groups) / (len(counts) * count) for group, count in counts.items()}


class ReweighGroupsPlugin(SupervisedPlugin):
    """Weighs each training sample's cross-entropy by its group's weight (`group_weights`).

    The weights are computed over all the data the strategy trains on in this experience (the
    new samples, plus the replay buffer where the strategy mixes it into its mini-batches) and
    carried through the dataset as a `sample_weight` attribute in getitem, so each mini-batch
    brings its own weights. Place this plugin first, so that its hooks run before the
    strategy's own (MIR, for instance, differentiates the loss in `before_backward`).
    """

    def __init__(self) -> None:
        super().__init__()
        self._weighted = False
        self._weights: torch.Tensor | None = None

    def before_training_exp(self, strategy, **kwargs) -> None:
        self._weighted = False

    def before_training_epoch(self, strategy, **kwargs) -> None:
        """Give every dataset of the training loader its samples' weights (once per experience).

        This runs after every plugin's `before_training_exp`, so the loader is final: either
        the template's own DataLoader over `adapted_dataset` (which GDumb makes its buffer),
        rebuilt here over the weighted dataset by the template's `make_train_dataloader`, or
        an Avalanche multi-dataset loader (replay's, over the new data and the buffer), whose
        `datasets` are read again each time it is iterated.
        """
        if self._weighted:
            return
        loader = strategy.dataloader
        if isinstance(loader, MultiDatasetDataLoader):
            loader.datasets = _weighted(loader.datasets)
        elif getattr(loader, "dataset", None) is strategy.adapted_dataset:
            (strategy.adapted_dataset,) = _weighted([strategy.adapted_dataset])
            strategy.make_train_dataloader(**kwargs)
        else:
            raise TypeError(f"cannot reweigh the samples of a {type(loader).__name__}")
        self._weighted = True

    def before_training_iteration(self, strategy, **kwargs) -> None:
        """Take the weights out of the mini-batch, leaving (x, y, task label) for the rest."""
        # The weight was appended last to each item, after the task label; strategies read
        # the task label as mbatch[-1] (and DER as mbatch[2]), so it must go before they look.
        self._weights = strategy.mbatch.pop()

    def before_backward(self, strategy, **kwargs) -> None:
        """Turn the mean cross-entropy of the mini-batch's samples into their weighted mean.

        Strategies compute that mean in different places (the criterion; DER's own
        F.cross_entropy on the rows after the replayed ones it prepends), so rather than
        replacing it this adds mean((w - 1) * CE): plain mean + that = mean(w * CE).
        """
        weights = self._weights
        if weights is None:
            raise RuntimeError(NO_WEIGHTS)
        n = len(weights)
        # DER prepends its replay rows to the batch; the loader's samples are the last n rows.
        output, target = strategy.mb_output[-n:], strategy.mb_y[-n:]
        per_sample = F.cross_entropy(output, target, reduction="none")
        strategy.loss += ((weights.to(per_sample) - 1.0) * per_sample).mean()
        self._weights = None


def _weighted(datasets: list) -> list:
    """Copies of `datasets` whose items end with their sample's weight, computed over all."""
    groups = [sample_groups(dataset) for dataset in datasets]
    weights = group_weights([group for part in groups for group in part])
    return [
        dataset.update_data_attribute(
            SAMPLE_WEIGHT,
            DataAttribute([weights[g] for g in part], SAMPLE_WEIGHT, use_in_getitem=True),
        )
        for dataset, part in zip(datasets, groups, strict=True)
    ]


class _InsertionOrderedKeys(dict):
    """A set that iterates in insertion order (what ParametricBuffer needs of `seen_groups`)."""

    def update(self, keys: Iterable[Hashable]) -> None:  # type: ignore[override]  # a set's update
        for key in keys:
            self.setdefault(key, None)


class GroupBalancedBuffer(ParametricBuffer):
    """A replay buffer whose memory is split equally over the groups of the samples.

    Avalanche's `ParametricBuffer` with a grouping by the `sample_group` attribute (by
    (group, class) pairs with `by_class=True`) and its random selection within each group.
    `with_logits=True` also stores each sample's logits, as DER's buffer does.
    """

    def __init__(self, max_size: int, *, by_class: bool = False, with_logits: bool = False):
        super().__init__(max_size, groupby=None)
        self.by_class = by_class
        self.with_logits = with_logits
        # ParametricBuffer keeps the group ids it has seen in a set and gives the remainder of
        # max_size to the first ones it iterates; a set of strings iterates in an order that
        # changes with PYTHONHASHSEED, so keep them in insertion order to stay reproducible.
        self.seen_groups = _InsertionOrderedKeys()

    def post_adapt(self, agent, exp) -> None:
        if self.with_logits:
            # As avalanche's ClassBalancedBufferWithLogits.update (DER): the logits of the
            # model just trained, stored with each sample.
            logits = compute_dataset_logits(
                exp.dataset.eval(), agent.model, agent.train_mb_size, agent.device
            )
            exp = SimpleNamespace(dataset=with_logits(exp.dataset, logits))
        super().post_adapt(agent, exp)

    def group_key(self, group: str | None, target: int) -> Hashable:
        return (group, int(target)) if self.by_class else group

    def _make_groups(self, strategy, data) -> dict[Hashable, Any]:
        """Split `data` by group (or (group, class)), groups in order of first appearance."""
        indices: dict[Hashable, list[int]] = {}
        targets = data.targets
        for i, (group, target) in enumerate(zip(getattr(data, SAMPLE_GROUP), targets, strict=True)):
            indices.setdefault(self.group_key(group, target), []).append(i)
        return {key: data.subset(idx) for key, idx in indices.items()}


def balanced_subset(dataset, size: int, *, by_class: bool = False):
    """At most `size` samples of `dataset`, as balanced across its groups as they allow."""
    buffer = GroupBalancedBuffer(size, by_class=by_class)
    # Random selection uses no strategy, so none is passed.
    buffer.post_adapt(None, SimpleNamespace(dataset=dataset))
    return buffer.buffer
