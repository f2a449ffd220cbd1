"""The drift stage in the ``properties`` feature space: KS per property, explained."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from drift.properties import PIXEL_PROPERTIES
from service.pipeline.drift import DriftFindings, features_of, run_covariate_test
from service.pipeline.records import explain_covariate


def _images(seed: int, n: int, noise: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 7, 7, generator=gen)
    x = 0.2 + 0.6 * torch.nn.functional.interpolate(coarse, size=(28, 28), mode="bilinear")
    x = x + noise * torch.randn(x.shape, generator=gen)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)  # stored pixels are uint8


def _window(settings: Any, noisy_group: str | None) -> tuple[Any, Any, Any]:
    groups_ref = np.array(["A", "B"] * 150)
    groups = np.array(["A", "B"] * 60)
    x = _images(2, 120)
    if noisy_group is not None:
        noisy = _images(3, 120, noise=0.1)
        x = torch.where(torch.from_numpy(groups == noisy_group)[:, None, None, None], noisy, x)
    reference = SimpleNamespace(holdout=SimpleNamespace(x=_images(1, 300), groups=groups_ref))
    inputs = SimpleNamespace(
        batch=SimpleNamespace(x=x, groups=groups), window=SimpleNamespace(seq=7)
    )
    return SimpleNamespace(settings=settings), inputs, reference


def test_the_properties_space_tests_ks_per_property_and_explains_the_group(tmp_path) -> None:
    from helpers import make_settings

    # drift_detector stays the default (mmd): the properties space always tests with KS.
    settings = make_settings(tmp_path, drift_feature_space="properties")
    service, inputs, reference = _window(settings, noisy_group="B")
    features = features_of(settings, inputs.batch.x, None, reference)
    assert features.reference.shape == (300, len(PIXEL_PROPERTIES))
    assert features.window.shape == (120, len(PIXEL_PROPERTIES))
    result = run_covariate_test(service, inputs, None, features)  # type: ignore[arg-type]
    assert result.detector == "ks" and result.feature_space == "properties"
    assert result.drifted_groups == ["B"]
    findings = DriftFindings((result,), features)
    explained = explain_covariate(result, findings.covariate, inputs.batch.groups)
    assert explained is not None
    fired = [c.name for c in explained.fired]
    print(f"fired: {fired}; {explained.sentence(since=7)}")
    assert "noise" in fired
    assert explained.sentence("group B's images", since=7).startswith("group B's images are ")


def test_no_explanation_without_drift_or_outside_the_properties_space(tmp_path) -> None:
    from helpers import make_settings

    settings = make_settings(tmp_path, drift_feature_space="properties")
    service, inputs, reference = _window(settings, noisy_group=None)
    features = features_of(settings, inputs.batch.x, None, reference)
    result = run_covariate_test(service, inputs, None, features)  # type: ignore[arg-type]
    assert not result.is_drift
    findings = DriftFindings((result,), features)
    assert explain_covariate(result, findings.covariate, inputs.batch.groups) is None
    from dataclasses import replace

    elsewhere = replace(result, is_drift=True, feature_space="encoder")
    assert explain_covariate(elsewhere, findings.covariate, inputs.batch.groups) is None
