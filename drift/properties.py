"""Image properties: a cheap, explainable feature space computed from the pixels.

Each image is described by a few numbers an operator can picture: ``brightness`` (mean
luminance), ``contrast`` (its standard deviation), ``sharpness`` (variance of the
Laplacian), ``noise`` (Immerkær's estimate of the sensor noise's standard deviation),
``saturation`` (mean of ``(max - min) / max`` over the colour channels; 0 for grey) and,
where the original size is known, ``size`` (the square root of its pixel count) and
``aspect_ratio`` (width / height). The learned feature spaces (:mod:`drift.features`)
smooth pixel noise away; these do not, and a shift found here can be said in words:
"group B's images are 30 % darker and 120 % noisier since window 12".

Covariate drift in this space is tested with the feature-wise KS tests of
:mod:`drift.ks` (Bonferroni over the properties); :func:`explain_properties` says which
properties moved, by how much (relative change of the median) and with which p-value.

Luminance is ITU-R BT.601's ``0.299 R + 0.587 G + 0.114 B`` for three channels, the mean
of the channels otherwise. Immerkær's estimate (J. Immerkær, "Fast noise variance
estimation", CVIU 64(2), 1996) is ``sqrt(pi / 2) / 6`` times the mean absolute response to
the difference of two Laplacians, a kernel that cancels planes and most of the image's
structure, so that what is left is mostly noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

PROPERTY_NAMES: tuple[str, ...] = (
    "brightness",
    "contrast",
    "sharpness",
    "noise",
    "saturation",
    "size",
    "aspect_ratio",
)
"""Every property, in the order of an :class:`ImageProperties`' columns."""

PIXEL_PROPERTIES: tuple[str, ...] = PROPERTY_NAMES[:5]
"""The properties computed from the pixels alone (the original size unknown)."""

# Words for a property that fell / rose, as in "30 % darker".
WORDS: dict[str, tuple[str, str]] = {
    "brightness": ("darker", "brighter"),
    "contrast": ("lower contrast", "higher contrast"),
    "sharpness": ("blurrier", "sharper"),
    "noise": ("cleaner", "noisier"),
    "saturation": ("less saturated", "more saturated"),
    "size": ("smaller", "larger"),
    "aspect_ratio": ("taller", "wider"),
}

WRONG_SHAPE = "expected images (N, C, H, W), got shape {shape}"
WRONG_SIZES = "sizes must be (N, 2) positive (height, width) pairs for {n} images, got {shape}"
WRONG_COLUMNS = "reference and window need the same {n} property columns, got {ref} and {win}"
NO_CHANGE = "no image property changed beyond chance"

_LUMA = (0.299, 0.587, 0.114)
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
_IMMERKAER = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
_CHUNK = 2048  # images per pass: bounds the memory of the convolutions


@dataclass(frozen=True)
class ImageProperties:
    """Properties of ``N`` images: ``values`` ``(N, len(names))`` float64, columns ``names``
    (:data:`PROPERTY_NAMES`, or :data:`PIXEL_PROPERTIES` when the original sizes are unknown).
    """

    values: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, name: str) -> np.ndarray:
        """The column of property ``name``."""
        return self.values[:, self.names.index(name)]


def _chunk_properties(x: torch.Tensor) -> torch.Tensor:
    """``(n, 5)`` pixel properties of float images ``x`` ``(n, C, H, W)`` in [0, 1]."""
    n, c, h, w = x.shape
    if c == 3:
        grey = (x * torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    else:
        grey = x.mean(dim=1, keepdim=True)
    flat = grey.reshape(n, -1)
    brightness = flat.mean(dim=1)
    contrast = flat.std(dim=1, correction=0)
    if h >= 3 and w >= 3:
        lap = F.conv2d(grey, _LAPLACIAN.to(x.dtype).view(1, 1, 3, 3)).reshape(n, -1)
        sharpness = lap.var(dim=1, correction=0)
        residual = F.conv2d(grey, _IMMERKAER.to(x.dtype).view(1, 1, 3, 3)).reshape(n, -1)
        noise = residual.abs().mean(dim=1) * (math.sqrt(math.pi / 2) / 6)
    else:  # too small for a 3x3 neighbourhood
        sharpness = noise = torch.zeros(n, dtype=x.dtype)
    if c == 3:
        top, bottom = x.amax(dim=1), x.amin(dim=1)
        ratio = torch.where(top > 0, (top - bottom) / top.clamp_min(1e-12), torch.zeros_like(top))
        saturation = ratio.reshape(n, -1).mean(dim=1)
    else:
        saturation = torch.zeros(n, dtype=x.dtype)
    return torch.stack([brightness, contrast, sharpness, noise, saturation], dim=1)


def image_properties(
    images: torch.Tensor | np.ndarray, sizes: np.ndarray | Sequence[Sequence[int]] | None = None
) -> ImageProperties:
    """The properties of each image of ``images`` ``(N, C, H, W)``.

    Parameters
    ----------
    images
        ``uint8`` pixels, or floats in [0, 1]; one channel (grey) or three (RGB).
    sizes
        The original ``(height, width)`` of each image, before it was resized to the
        model's input, if known: adds the columns ``size`` and ``aspect_ratio``.

    Examples
    --------
    >>> gen = torch.Generator().manual_seed(0)
    >>> flat = torch.full((2, 1, 28, 28), 0.5)
    >>> noisy = (flat + 0.1 * torch.randn(flat.shape, generator=gen)).clamp(0, 1)
    >>> p = image_properties(torch.cat([flat, noisy]))
    >>> p.names
    ('brightness', 'contrast', 'sharpness', 'noise', 'saturation')
    >>> np.round(p["brightness"], 1).tolist(), np.round(p["noise"], 2).tolist()
    ([0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.1, 0.1])
    >>> rgb = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    >>> rgb[:, 0] = 200  # pure red
    >>> p = image_properties(rgb, sizes=[(480, 640)])
    >>> p["saturation"].tolist(), p["size"].round(1).tolist(), p["aspect_ratio"].tolist()
    ([1.0], [554.3], [1.3333333333333333])
    """
    x = torch.as_tensor(images)
    if x.ndim != 4:
        raise ValueError(WRONG_SHAPE.format(shape=tuple(x.shape)))
    x = x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)
    n = len(x)
    with torch.no_grad():
        parts = [_chunk_properties(x[s : s + _CHUNK]) for s in range(0, n, _CHUNK)]
    pixels = torch.cat(parts).double().numpy() if parts else np.zeros((0, 5))
    if sizes is None:
        return ImageProperties(pixels, PIXEL_PROPERTIES)
    hw = np.asarray(sizes, dtype=np.float64).reshape(-1, 2) if len(sizes) else np.zeros((0, 2))
    if hw.shape != (n, 2) or (hw <= 0).any():
        raise ValueError(WRONG_SIZES.format(n=n, shape=np.shape(sizes)))
    extra = np.stack([np.sqrt(hw[:, 0] * hw[:, 1]), hw[:, 1] / hw[:, 0]], axis=1)
    return ImageProperties(np.concatenate([pixels, extra], axis=1), PROPERTY_NAMES)


@dataclass(frozen=True)
class PropertyChange:
    """How one property moved: the medians, the relative change of the median (None when the
    reference's median is 0), the KS p-value (uncorrected) and whether its test fired."""

    name: str
    reference_median: float
    window_median: float
    relative_change: float | None
    p_value: float
    fired: bool

    @property
    def words(self) -> str:
        """ "30 % darker", or the word alone when the relative change is undefined."""
        fell, rose = WORDS[self.name]
        moved = fell if self.window_median < self.reference_median else rose
        if self.relative_change is None:
            return moved
        return f"{abs(self.relative_change) * 100:.0f} % {moved}"


@dataclass(frozen=True)
class PropertyExplanation:
    """Every property's change and test, and the threshold each p-value was compared with
    (``threshold / len(changes)``: Bonferroni over the properties, as :mod:`drift.ks`)."""

    changes: tuple[PropertyChange, ...]
    threshold: float

    @property
    def fired(self) -> list[PropertyChange]:
        """The properties whose test fired, in :data:`PROPERTY_NAMES` order."""
        return [c for c in self.changes if c.fired]

    def sentence(self, subject: str = "the images", since: int | None = None) -> str:
        """ "group B's images are 30 % darker and 120 % noisier since window 12"."""
        fired = [c.words for c in self.fired]
        if not fired:
            return NO_CHANGE
        listed = fired[0] if len(fired) == 1 else ", ".join(fired[:-1]) + " and " + fired[-1]
        tail = f" since window {since}" if since is not None else ""
        return f"{subject} are {listed}{tail}"

    def to_dict(self, subject: str = "the images", since: int | None = None) -> dict[str, Any]:
        """Plain JSON-able form, with the sentence, for an alert's payload."""
        return {
            "sentence": self.sentence(subject, since),
            "threshold": self.threshold,
            "properties": {
                c.name: {
                    "reference_median": c.reference_median,
                    "window_median": c.window_median,
                    "relative_change": c.relative_change,
                    "p_value": c.p_value,
                    "drift": c.fired,
                }
                for c in self.changes
            },
        }


def _ks_p_values(reference: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Per column, the two-sided two-sample KS p-value (alibi-detect's KSDrift scores)."""
    from drift.base import alibi_detector

    detector = alibi_detector("KSDrift", reference.astype(np.float32), p_val=0.05)
    p_values, _ = detector.score(window.astype(np.float32))
    return np.asarray(p_values, dtype=np.float64)


def explain_properties(
    reference: np.ndarray,
    window: np.ndarray,
    *,
    names: Sequence[str] = PIXEL_PROPERTIES,
    threshold: float = 0.01,
) -> PropertyExplanation:
    """Which properties moved between ``reference`` and ``window`` (rows of properties,
    columns ``names``), how much, and whether each one's KS test fired at ``threshold``
    Bonferroni-corrected over the properties (the level the covariate test used).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal([0.5, 0.2, 0.1, 0.02, 0.0], 0.0005, size=(300, 5))
    >>> win = rng.normal([0.35, 0.2, 0.1, 0.044, 0.0], 0.0005, size=(100, 5))
    >>> e = explain_properties(ref, win)
    >>> [c.name for c in e.fired]
    ['brightness', 'noise']
    >>> e.sentence("group B's images", since=12)
    "group B's images are 30 % darker and 120 % noisier since window 12"
    """
    ref = np.asarray(reference, dtype=np.float64)
    win = np.asarray(window, dtype=np.float64)
    n = len(names)
    if ref.ndim != 2 or win.ndim != 2 or ref.shape[1] != n or win.shape[1] != n:
        raise ValueError(WRONG_COLUMNS.format(n=n, ref=ref.shape, win=win.shape))
    p_values = _ks_p_values(ref, win) if len(ref) and len(win) else np.ones(n)
    level = threshold / max(n, 1)
    changes = []
    for j, name in enumerate(names):
        before = float(np.median(ref[:, j])) if len(ref) else 0.0
        after = float(np.median(win[:, j])) if len(win) else 0.0
        scale = abs(before)
        relative = (after - before) / scale if scale > 1e-12 else None
        changes.append(
            PropertyChange(
                name=name,
                reference_median=before,
                window_median=after,
                relative_change=relative,
                p_value=float(p_values[j]),
                fired=bool(p_values[j] < level),
            )
        )
    return PropertyExplanation(tuple(changes), threshold)
