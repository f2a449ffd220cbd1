"""Image properties: each moves the right way on controlled images; KS on them finds noise."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from drift.detectors import make_covariate_detector
from drift.ks import KSCovariateDetector
from drift.properties import (
    NO_CHANGE,
    PIXEL_PROPERTIES,
    PROPERTY_NAMES,
    PropertyChange,
    PropertyExplanation,
    explain_properties,
    image_properties,
)

SIZE = 28


def textured(seed: int, n: int, channels: int = 1) -> torch.Tensor:
    """``n`` smooth random images in [0.2, 0.8] (so that noise of std 0.05 is rarely
    clipped): sums of random low-frequency waves about mid-grey."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 7, 7, generator=gen)
    smooth = F.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic", align_corners=False)
    return (0.2 + 0.6 * smooth).clamp(0.2, 0.8)


def with_noise(x: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (x + std * torch.randn(x.shape, generator=gen)).clamp(0.0, 1.0)


def blurred(x: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    radius = int(np.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode="replicate"),
        k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
        groups=c,
    )
    return F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode="replicate"),
        k.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
        groups=c,
    )


def medians(x: torch.Tensor) -> dict[str, float]:
    p = image_properties(x)
    return {name: float(np.median(p[name])) for name in p.names}


def test_the_columns_are_the_fixed_names() -> None:
    x = textured(0, 4)
    assert image_properties(x).names == PIXEL_PROPERTIES == PROPERTY_NAMES[:5]
    p = image_properties(x, sizes=[(30, 60)] * 4)
    assert p.names == PROPERTY_NAMES and p.values.shape == (4, 7)
    assert p["size"].tolist() == pytest.approx([np.sqrt(1800)] * 4)
    assert p["aspect_ratio"].tolist() == [2.0] * 4


def test_uint8_and_float_images_give_the_same_properties() -> None:
    x = textured(1, 8, channels=3)
    as_bytes = (x * 255).round().to(torch.uint8)
    floats = image_properties(as_bytes.float() / 255).values
    assert image_properties(as_bytes).values == pytest.approx(floats, rel=1e-5, abs=1e-7)


def test_darker_images_have_lower_brightness() -> None:
    x = textured(2, 200)
    before, after = medians(x), medians(0.7 * x)
    change = after["brightness"] / before["brightness"] - 1
    print(f"brightness {before['brightness']:.3f} -> {after['brightness']:.3f} ({change:+.1%})")
    assert change == pytest.approx(-0.3, abs=0.01)


def test_noise_raises_the_noise_estimate_but_not_the_brightness() -> None:
    x = textured(3, 200)
    before, after = medians(x), medians(with_noise(x, 0.05, seed=4))
    print(
        f"noise {before['noise']:.4f} -> {after['noise']:.4f} (added std 0.05); "
        f"brightness {before['brightness']:.4f} -> {after['brightness']:.4f}"
    )
    assert before["noise"] < 0.01  # smooth images: little left after the kernel
    assert after["noise"] == pytest.approx(0.05, rel=0.15)  # Immerkaer's estimate of the std
    assert abs(after["brightness"] - before["brightness"]) < 0.005


def test_blur_lowers_the_sharpness() -> None:
    x = textured(5, 200)
    before, after = medians(x), medians(blurred(x))
    ratio = after["sharpness"] / before["sharpness"]
    print(f"sharpness {before['sharpness']:.5f} -> {after['sharpness']:.5f} (x{ratio:.2f})")
    assert ratio < 0.5


def test_lower_contrast_lowers_the_contrast_about_the_same_brightness() -> None:
    x = textured(6, 200)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    before, after = medians(x), medians(0.5 * (x - mean) + mean)
    assert after["contrast"] / before["contrast"] == pytest.approx(0.5, abs=0.01)
    assert after["brightness"] == pytest.approx(before["brightness"], abs=1e-4)


def test_grey_images_have_no_saturation_and_pure_colours_full() -> None:
    grey = textured(7, 5)
    assert image_properties(grey)["saturation"].tolist() == [0.0] * 5
    assert image_properties(grey.repeat(1, 3, 1, 1))["saturation"] == pytest.approx([0.0] * 5)
    red = torch.zeros(2, 3, 8, 8)
    red[:, 0] = 0.9
    assert image_properties(red)["saturation"].tolist() == [1.0, 1.0]
    assert image_properties(torch.zeros(1, 3, 8, 8))["saturation"].tolist() == [0.0]  # black


def test_thousands_of_small_images_take_well_under_a_second() -> None:
    x = textured(8, 5000)
    image_properties(x[:10])  # warm-up
    started = time.perf_counter()
    image_properties(x)
    seconds = time.perf_counter() - started
    print(f"5000 images of 28x28 in {seconds:.3f} s")
    assert seconds < 3.0  # 0.2 to 1 s on a shared, busy core


def test_bad_shapes_and_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="expected images"):
        image_properties(torch.zeros(3, 28, 28))
    with pytest.raises(ValueError, match="sizes must be"):
        image_properties(torch.zeros(2, 1, 8, 8), sizes=[(8, 8)])
    with pytest.raises(ValueError, match="sizes must be"):
        image_properties(torch.zeros(1, 1, 8, 8), sizes=[(0, 8)])


def _windows(shift: str | None, seed: int) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    ref = image_properties(textured(100 + seed, 600)).values
    window = textured(200 + seed, 200)
    if shift == "noise":
        window = with_noise(window, 0.1, seed=300 + seed)
    groups_ref = ["a", "b"] * 300
    return ref, image_properties(window).values, groups_ref, ["a", "b"] * 100


def test_a_stationary_seeded_stream_does_not_drift() -> None:
    smallest = 1.0
    for seed in range(5):
        ref, win, g_ref, g_win = _windows(None, seed)
        result = make_covariate_detector("ks", ref, g_ref, feature_space="properties").test(
            win, g_win
        )
        assert not result.is_drift and result.detector == "ks"
        smallest = min(
            smallest, result.p_value or 1.0, *[v.p_value or 1.0 for v in result.per_group.values()]
        )
    print(f"smallest corrected p over 5 stationary windows: {smallest:.3f} (threshold <= 0.01)")
    assert smallest > 0.05


def test_noise_of_std_0_1_drifts_far_beyond_the_threshold() -> None:
    ref, win, g_ref, g_win = _windows("noise", 0)
    result = KSCovariateDetector(ref, g_ref, feature_space="properties").test(win, g_win)
    print(f"noise std 0.1: corrected p {result.p_value:.2e} against threshold {result.threshold}")
    assert result.is_drift and result.drifted_groups == ["a", "b"]
    assert result.p_value is not None and result.p_value < 1e-6 * result.threshold
    fired = [c.name for c in explain_properties(ref, win, threshold=result.threshold).fired]
    assert "noise" in fired and "brightness" not in fired


def test_the_explanation_says_what_moved_in_words() -> None:
    rng = np.random.default_rng(9)
    centre = np.array([0.5, 0.2, 0.01, 0.02, 0.3])
    ref = centre * (1 + 0.001 * rng.standard_normal((400, 5)))
    shifted = centre * np.array([0.7, 1.0, 1.0, 2.2, 1.0])  # 30 % darker, 120 % noisier
    win = shifted * (1 + 0.001 * rng.standard_normal((100, 5)))
    e = explain_properties(ref, win, threshold=0.005)
    assert [c.name for c in e.fired] == ["brightness", "noise"]
    assert e.sentence("group B's images", since=12) == (
        "group B's images are 30 % darker and 120 % noisier since window 12"
    )
    brightness = e.changes[0]
    assert brightness.relative_change == pytest.approx(-0.3, abs=0.002)
    assert brightness.p_value < 0.001 / 5 and e.changes[1].p_value > 0.001
    payload = e.to_dict("group B's images", since=12)
    assert payload["sentence"].startswith("group B's images are 30 % darker")
    assert payload["properties"]["noise"]["drift"] is True
    assert set(payload["properties"]) == set(PIXEL_PROPERTIES)


def test_explanation_wording_of_each_direction() -> None:
    def change(name: str, before: float, after: float) -> PropertyChange:
        relative = (after - before) / before if before else None
        return PropertyChange(name, before, after, relative, 0.0, True)

    cases = [
        change("contrast", 0.2, 0.1),
        change("sharpness", 0.1, 0.05),
        change("saturation", 0.5, 0.75),
        change("size", 100.0, 50.0),
        change("aspect_ratio", 1.0, 1.5),
        change("noise", 0.0, 0.02),  # no relative change from 0: the word alone
    ]
    e = PropertyExplanation(tuple(cases), 0.01)
    assert e.sentence() == (
        "the images are 50 % lower contrast, 50 % blurrier, 50 % more saturated, "
        "50 % smaller, 50 % wider and noisier"
    )
    assert PropertyExplanation((), 0.01).sentence() == NO_CHANGE
    with pytest.raises(ValueError, match="same 5 property columns"):
        explain_properties(np.zeros((4, 5)), np.zeros((4, 7)))
