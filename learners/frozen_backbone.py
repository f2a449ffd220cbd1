"""Training the head alone on a frozen backbone's features, computed once per update.

When only the head learns (training mode ``head``), the backbone maps each image to the same
features in every epoch and for every replayed sample, so the strategy trains a model of the
head alone on those features: one backbone pass per update instead of one per epoch and per
replay batch. The strategy's memories then hold features, which stay valid because a
stream's backbone never changes in this mode. The backbone runs in eval mode, as
:meth:`Classifier.train_only` keeps its frozen blocks: a dropout layer without parameters
before the head (EfficientNet's, timm's ``head_drop``) is off, where a plain loop through the
whole model in training mode would apply it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from learners.classifier import Classifier

FEATURE_BATCH = 256  # images per backbone pass


class HeadOnly(nn.Module):
    """The classifier head as a model of its own: features shaped (N, D, 1, 1) to logits."""

    def __init__(self, head: nn.Linear) -> None:
        super().__init__()
        self.classifier = head

    @property
    def head(self) -> nn.Linear:
        return self.classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(x, 1))


def head_only(model: Classifier) -> bool:
    """Whether the head is all that learns in ``model`` (its backbone frozen)."""
    head = {id(p) for p in model.head.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return bool(trainable) and all(id(p) in head for p in trainable)


def backbone_features(model: Classifier, x: Tensor) -> Tensor:
    """Penultimate features of float images ``x`` (run on the model's device, kept on the CPU
    as the strategy's other inputs are), shaped (N, D, 1, 1)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            parts = [
                model.features(x[i : i + FEATURE_BATCH].to(device)).float().cpu()
                for i in range(0, len(x), FEATURE_BATCH)
            ]
    finally:
        model.train(was_training)
    features = torch.cat(parts) if parts else torch.empty(0)
    return features.reshape(len(x), -1, 1, 1).contiguous()
