"""With a frozen backbone the features are computed once per update, the head trained alone."""

from __future__ import annotations

import pytest
import torch

from learners.frozen_backbone import head_only
from learners.models import build_model
from learners.update import train_update


def _update(model, state=None, epochs=3):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    x, y = torch.rand(48, 1, 16, 16), torch.randint(0, 3, (48,))
    return train_update(
        model, x, y, sample_ids=[f"s{i}" for i in range(48)], strategy="replay",
        params={"mem_size": 20}, state=state, epochs=epochs, batch_size=8, lr=0.05, seed=0,
        groups=["A"] * 48,
    )  # fmt: skip


def test_the_backbone_runs_once_per_update_in_head_mode() -> None:
    model = build_model(n_classes=3, in_channels=1, input_size=16, seed=0, train="head")
    assert head_only(model)
    calls = []
    model.body.register_forward_hook(lambda *_: calls.append(1))
    first = _update(model)
    # Hooks are copied with the model: one pass over the 48 samples (one batch of features),
    # not one per epoch and replayed batch.
    assert len(calls) == 1
    assert first.state.meta["inputs"] == "features"
    for name, value in model.state_dict().items():
        if not name.startswith("classifier."):
            assert torch.equal(value, first.model.state_dict()[name]), name
    assert not torch.equal(model.head.weight, first.model.head.weight)
    second = _update(first.model, first.state)  # its memory of features replays
    assert second.state.experiences_seen == 2


def test_a_state_of_features_does_not_continue_an_update_of_images() -> None:
    head = _update(build_model(n_classes=3, in_channels=1, input_size=16, seed=0, train="head"))
    everything = build_model(n_classes=3, in_channels=1, input_size=16, seed=0, train="all")
    assert not head_only(everything)
    assert _update(everything, epochs=1).state.meta["inputs"] == "images"
    with pytest.raises(ValueError, match="remembers features, but this update trains on images"):
        _update(everything, head.state, epochs=1)
