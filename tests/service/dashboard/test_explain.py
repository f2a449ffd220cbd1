"""Grad-CAM through captum against Grad-CAM computed by hand, and the overlays drawn from it."""

from __future__ import annotations

import base64

import numpy as np
import torch
from helpers import digit_samples

from learners.models import build_model
from service.dashboard.data import SampleImage
from service.dashboard.explain import ExplainedSample, Explanation, grad_cam, last_conv
from service.dashboard.figures import grad_cam_cells, grad_cam_overlay
from service.ingest.images import decode


def _images(n: int) -> torch.Tensor:
    samples = digit_samples(n, seed=11)
    return (
        torch.stack(
            [decode(base64.b64decode(s["image"]), max_pixels=10_000) for s in samples]
        ).float()
        / 255.0
    )


def _by_hand(model: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM as Selvaraju et al. define it: ReLU(sum_k mean(dy_c/dA_k) * A_k)."""
    layer = last_conv(model)
    saved: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: saved.update(a=out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    predicted = logits.argmax(dim=1)
    chosen = logits.gather(1, predicted[:, None]).sum()
    (grads,) = torch.autograd.grad(chosen, saved["a"])
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * saved["a"]).sum(dim=1)).detach().numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1)
    return predicted.numpy(), cam / np.where(peak > 0, peak, 1.0)[:, None, None]


def test_captum_grad_cam_matches_the_definition_and_leaves_the_model_alone() -> None:
    model = build_model(n_classes=10, in_channels=1, input_size=28, seed=4).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _images(6)

    predicted, maps = grad_cam(model, x)
    expected_pred, expected = _by_hand(model, x)

    assert np.array_equal(predicted, expected_pred)
    assert maps.shape == (6, 14, 14)  # the last convolution's resolution
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    assert maps.min() >= 0.0 and np.all(
        (maps.max(axis=(1, 2)) == 1.0) | (maps.max(axis=(1, 2)) == 0)
    )
    # A private copy was explained: no hooks left behind, weights unchanged.
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_overlays_are_pngs_of_the_image_size_with_heat_where_the_map_is_high() -> None:
    pixels = np.zeros((1, 28, 28), dtype=np.uint8)
    image = SampleImage("x", "3", 3, "B", 5, "holdout", pixels)
    cam = np.zeros((14, 14))
    cam[:7, :7] = 1.0  # top-left quarter
    uri = grad_cam_overlay(image, cam, scale=1)
    assert uri.startswith("data:image/png;base64,")
    rgb = decode(base64.b64decode(uri.split(",", 1)[1]), max_pixels=10_000)
    assert rgb.shape == (3, 28, 28)
    hot, cold = (
        rgb[:, 2:10, 2:10].float().mean(dim=(1, 2)),
        rgb[:, 20:, 20:].float().mean(dim=(1, 2)),
    )
    # On a black image: jet's dark red (0.5, 0, 0) where the map is 1, dark blue where it is 0.
    assert hot[0] > 40 and hot[2] < 5 and cold[2] > 40 and cold[0] < 5

    explanation = Explanation(
        kind="regression",
        title="t",
        note="n",
        models={"champion": 1, "candidate": 2},
        samples=[ExplainedSample(image, {"champion": "3", "candidate": "5"},
                                 {"champion": cam, "candidate": cam})],
    )  # fmt: skip
    (cell,) = grad_cam_cells(explanation)
    assert [m["correct"] for m in cell["maps"]] == [True, False]
    assert explanation.to_dict()["samples"][0]["maps"]["champion"][0][0] == 1.0


def test_a_model_without_a_convolution_gets_a_note_instead_of_maps() -> None:
    from types import SimpleNamespace

    import pytest

    from service.dashboard.explain import NoConvolution, explanations

    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    mlp.arch = {"name": "timm:mixer_like"}  # type: ignore[assignment]
    with pytest.raises(NoConvolution, match="timm:mixer_like has none"):
        last_conv(mlp)
    service = SimpleNamespace(version=lambda stream, version: SimpleNamespace(model=mlp))
    data = {
        "stream": "s",
        "champion": 1,
        "incidents": [{"kind": "covariate", "windows": [3]}],
        "versions": [],
    }
    (note,) = explanations(service, data)  # type: ignore[arg-type]
    assert note.kind == "unavailable" and note.samples == []
    assert "draws no maps" in note.note
    # With a convolution the page explains as before (here: nothing fails for want of one).
    cnn = build_model(n_classes=10, in_channels=1, input_size=28, seed=0)
    assert isinstance(last_conv(cnn), torch.nn.Conv2d)
