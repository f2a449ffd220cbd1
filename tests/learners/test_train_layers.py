"""Training modes: only the chosen layers learn, frozen blocks keep their batch-norm
statistics, every strategy works on the trainable parameters, and a rebuilt model from its
manifest's ``arch`` trains the same layers."""

from __future__ import annotations

import pytest
import torch
from conftest import SIZE
from training_runs import update

from learners.models import build_model
from learners.strategies import STRATEGY_NAMES

# timm's ResNet-18 takes one channel (``in_chans``) and has batch norm in every block.
RESNET = {"name": "timm:resnet18", "n_classes": 10, "in_channels": 1, "input_size": SIZE}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, after[k])}


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_every_strategy_trains_only_the_head_of_a_frozen_small_cnn(strategy, exp_a, exp_b) -> None:
    model = build_model(n_classes=10, in_channels=1, input_size=SIZE, seed=0, train="head")
    first = update(model, exp_a, strategy, None)
    second = update(first.model, exp_b, strategy, first.state)
    before, after = model.state_dict(), second.model.state_dict()
    changed = _changed(before, after)
    print(strategy, sorted(changed))
    assert changed and changed <= {"classifier.weight", "classifier.bias"}, changed
    assert second.model.arch["train"] == "head"


@pytest.mark.parametrize(("layers", "learns", "keeps"), [
    ("head", "classifier.weight", "backbone.layer4.1.conv2.weight"),
    ("last-block", "backbone.layer4.1.conv2.weight", "backbone.layer3.1.conv2.weight"),
    ("all", "backbone.conv1.weight", None),
])  # fmt: skip
def test_the_chosen_layers_learn_and_frozen_batch_norm_keeps_its_statistics(
    exp_a, layers: str, learns: str, keeps: str | None
) -> None:
    model = build_model(seed=0, train=layers, **RESNET)  # type: ignore[arg-type]
    trained = update(model, exp_a, "ewc", None, ewc_lambda=1.0).model
    changed = _changed(model.state_dict(), trained.state_dict())
    assert learns in changed
    if keeps is not None:
        frozen_stats = keeps.replace("conv2.weight", "bn2.running_mean")
        assert keeps not in changed and frozen_stats not in changed
        assert not trained.backbone.layer3.training  # frozen blocks stay in eval mode
    rebuilt = build_model(seed=1, **trained.arch)
    trainable = {n for n, p in rebuilt.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in trained.named_parameters() if p.requires_grad}


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^train: 'some' is not one of all, last-block, head"):
        build_model(n_classes=3, in_channels=1, input_size=SIZE, seed=0, train="some")  # type: ignore[arg-type]
