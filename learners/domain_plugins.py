"""Avalanche plugins adapted to our domain-incremental updates on a CPU.

* `GroupAwareAGEMPlugin`: AGEMPlugin whose per-experience memory can be group-balanced.
* `DomainMIRPlugin`: MIRPlugin that replays from its whole buffer. Avalanche's MIR (written
  for online class-incremental streams) leaves out of the replay loader the buffer groups
  whose class occurs in the last mini-batch; here every experience holds every class, so that
  would drop most of the buffer at random. Its buffer groups may also be (group, class) pairs,
  which MIR's `int(key)` cannot read. Its virtual step differentiates the trainable
  parameters only, so it works with a frozen backbone.
* `CPUSynapticIntelligencePlugin`: SynapticIntelligencePlugin that works on a CPU (see there).

The first two rebuild their replay loader from their memory alone (`reset_loader`), so a
restored plugin continues exactly as one that never stopped.
"""

from __future__ import annotations

import copy

import torch
from avalanche.benchmarks.utils.data_loader import GroupBalancedInfiniteDataLoader
from avalanche.models.utils import avalanche_forward
from avalanche.training.plugins import AGEMPlugin, MIRPlugin, SynapticIntelligencePlugin
from avalanche.training.plugins.mir import cycle
from avalanche.training.utils import ParamData
from torch.utils.data import DataLoader

from learners.fairness import balanced_subset


class GroupAwareAGEMPlugin(AGEMPlugin):
    """AGEMPlugin; with `group_balanced`, each experience's memory is a group-balanced subset."""

    def __init__(
        self, patterns_per_experience: int, sample_size: int, group_balanced: bool = False
    ) -> None:
        super().__init__(patterns_per_experience, sample_size)
        self.group_balanced = group_balanced

    def after_training_exp(self, strategy, **kwargs) -> None:
        dataset = strategy.experience.dataset
        if self.group_balanced:
            # At most patterns_per_experience samples, so AGEM keeps them all.
            dataset = balanced_subset(dataset, self.patterns_per_experience)
        self.update_memory(dataset, **kwargs)

    def reset_loader(self) -> None:
        """The memory loader over `buffers`, built as `AGEMPlugin.update_memory` builds it."""
        self.buffer_dataloader = GroupBalancedInfiniteDataLoader(
            self.buffers,
            batch_size=(self.sample_size // len(self.buffers)),
            num_workers=0,
            pin_memory=False,
            persistent_workers=False,
        )
        # A lazy generator: nothing is drawn from the RNG until the first mini-batch.
        self.buffer_dliter = iter(self.buffer_dataloader)


class DomainMIRPlugin(MIRPlugin):
    """MIRPlugin replaying from its whole buffer (see the module docstring), also for a model
    whose backbone is frozen."""

    def before_backward(self, strategy, **kwargs) -> None:
        # Avalanche 0.6 differentiates the loss with respect to every parameter, which
        # autograd refuses when some are frozen (training the head or the last block only).
        # Same selection as MIRPlugin.before_backward; the virtual step moves trainable ones.
        if self.replay_loader is None:
            return
        x, y, tid = (t.to(strategy.device) for t in next(self.replay_loader))
        model = strategy.model
        trainable = [p for p in model.parameters() if p.requires_grad]
        grads = iter(
            torch.autograd.grad(strategy.loss, trainable, retain_graph=True, allow_unused=True)
        )
        virtual = copy.deepcopy(model)
        lr = strategy.optimizer.param_groups[0]["lr"]
        for original, moved in zip(model.parameters(), virtual.parameters(), strict=True):
            grad = next(grads) if original.requires_grad else None
            if grad is not None:
                moved.data = moved.data - lr * grad
        criterion = strategy._criterion
        with torch.no_grad():
            reduction, criterion.reduction = criterion.reduction, "none"
            before = criterion(avalanche_forward(model, x, tid), y)
            after = criterion(avalanche_forward(virtual, x, tid), y)
            chosen = torch.argsort(after - before)[len(x) - self.batch_size_mem :]
            criterion.reduction = reduction
        strategy.loss += criterion(avalanche_forward(model, x[chosen], tid[chosen]), y[chosen])

    def after_training_exp(self, strategy, **kwargs) -> None:
        self.storage_policy.update(strategy, **kwargs)
        self.reset_loader()

    def reset_loader(self) -> None:
        """The replay loader over the buffer, with MIRPlugin's batch size and size threshold."""
        buffer = self.storage_policy.buffer
        if len(buffer) > self.batch_size_mem:
            # `cycle` is a generator: the loader is only iterated (and shuffled) when used.
            self.replay_loader = cycle(DataLoader(buffer, batch_size=self.subsample, shuffle=True))
        else:
            self.replay_loader = None


class CPUSynapticIntelligencePlugin(SynapticIntelligencePlugin):
    """SynapticIntelligencePlugin whose parameter snapshots are copies, also on a CPU.

    Avalanche 0.6 snapshots parameters with `param.detach().cpu().flatten()`. On a GPU that
    copies; on a CPU it is a view of the live parameter, so the snapshots move with every
    optimiser step: the "old" parameters of each step equal the new ones (the path integral,
    hence every importance, stays 0) and the anchor of the penalty is the current weights (the
    penalty stays 0). SI then trains exactly as naive. The two snapshots that must outlive the
    step that took them are replaced by copies right after Avalanche takes them; the others
    (new parameters, gradients) are used at once, while still exact.
    """

    def before_training_exp(self, strategy, **kwargs) -> None:
        super().before_training_exp(strategy, **kwargs)
        _own_copies(self.ewc_data[0])  # the anchor: parameters at the start of the experience

    def before_training_iteration(self, strategy, **kwargs) -> None:
        super().before_training_iteration(strategy, **kwargs)
        _own_copies(self.syn_data["old_theta"])  # parameters before this step


def _own_copies(params: dict[str, ParamData]) -> None:
    for value in params.values():
        value.data = value.data.clone()
