"""The dashboard's and the report's figures, drawn with matplotlib as PNG data URIs.

Every figure is drawn from :func:`service.dashboard_data.stream_data`'s plain data (and
thumbnails from stored pixels), so the page and the self-contained report show the same
pictures. Figures use matplotlib's object API with the Agg canvas, never ``pyplot``:
no global state, safe in the API's worker threads.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from drift.result import DRIFT_KINDS
from service.dashboard.data import SampleImage
from service.dashboard.explain import Explanation
from service.ingest.images import encode_png

DPI = 100
P_FLOOR = 1e-4  # p-values of 0 (no permutation beat the statistic) are drawn here
GROUP_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
VERDICT_COLOURS = {"pass": "#2ca02c", "fail": "#d62728", "not decisive": "#7f7f7f"}
DRIFT_RED = "#d62728"
CAM_ALPHA = 0.45
_JET = colormaps["jet"]


def data_uri(figure: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def group_colour(groups: list[str], group: str) -> str:
    """A stable colour per group (by its place in the sorted group list)."""
    index = groups.index(group) if group in groups else len(groups)
    return GROUP_COLOURS[index % len(GROUP_COLOURS)]


def _window_axis(ax: Axes, seqs: list[int]) -> None:
    if seqs:
        ax.set_xlim(min(seqs) - 0.5, max(seqs) + 0.5)
        ax.set_xticks(seqs)
    ax.grid(axis="y", alpha=0.3)


def drift_timeline(data: dict[str, Any]) -> str | None:
    """One panel per drift kind: p-value (or statistic) per window, threshold, drifted windows.

    Covariate and label tests are drawn as p-values on a log scale with the corrected
    threshold; the concept detector has no p-value, so its statistic (the rise of the
    error rate) is drawn with its drifted windows marked.
    """
    rows = data["drift"]
    kinds = [k for k in DRIFT_KINDS if any(r["kind"] == k for r in rows)]
    if not kinds:
        return None
    groups = data["groups"]
    seqs = [w["seq"] for w in data["windows"]]
    height = 0.7 + 2.0 * len(kinds)
    figure = Figure(figsize=(10.5, height), dpi=DPI)
    figure.subplots_adjust(
        left=0.08, right=0.83, top=1 - 0.35 / height, bottom=0.55 / height, hspace=0.35
    )
    axes = figure.subplots(len(kinds), 1, sharex=True, squeeze=False)[:, 0]
    for ax, kind in zip(axes, kinds, strict=True):
        kind_rows = [r for r in rows if r["kind"] == kind]
        use_p = any(r["p_value"] is not None for r in kind_rows)
        value = "p_value" if use_p else "statistic"

        def plotted(v: float | None, *, log: bool = use_p) -> float:
            if v is None:
                return math.nan
            return max(float(v), P_FLOOR) if log else float(v)

        _overall(ax, [r["window"] for r in kind_rows], [plotted(r[value]) for r in kind_rows])
        for group in groups:
            points = [
                (r["window"], plotted((r["per_group"].get(group) or {}).get(value)))
                for r in kind_rows
            ]
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                ".--",
                color=group_colour(groups, group),
                lw=1,
                alpha=0.8,
                label=f"group {group}",
            )
        drifted = [r for r in kind_rows if r["verdict"] == "drift"]
        for r in drifted:
            ax.axvspan(r["window"] - 0.45, r["window"] + 0.45, color=DRIFT_RED, alpha=0.12, lw=0)
        ax.plot(
            [r["window"] for r in drifted],
            [plotted(r[value]) for r in drifted],
            "X",
            color=DRIFT_RED,
            ms=10,
            label="drift",
            zorder=5,
        )
        if use_p:
            ax.set_yscale("log")
            ax.yaxis.set_minor_locator(NullLocator())
            threshold = kind_rows[-1]["threshold"]
            ax.axhline(
                threshold, color=DRIFT_RED, ls=":", lw=1.2, label=f"threshold {threshold:.3g}"
            )
            ax.set_ylabel("p-value")
        else:
            ax.axhline(0.0, color="grey", lw=0.8)
            ax.set_ylabel("error-rate rise")
        detector = kind_rows[-1]["detector"]
        ax.set_title(f"{kind} ({detector})", loc="left", fontsize=10)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
        _window_axis(ax, seqs)
    axes[-1].set_xlabel("window")
    return data_uri(figure)


def _overall(ax: Axes, x: list[int], y: list[float]) -> None:
    """The overall line of a per-window plot, drawn the same in every figure."""
    ax.plot(x, y, "o-", color="black", lw=1.5, ms=4, label="overall")


def accuracy_timeline(data: dict[str, Any]) -> str | None:
    """Prequential accuracy per group and overall, per window, under each serving champion.

    Shaded bands show which version served each window; a promotion is a green line at
    the window that trained it, a rejected candidate a red cross.
    """
    windows = [w for w in data["windows"] if w["accuracy"]]
    if not windows:
        return None
    groups = data["groups"]
    seqs = [w["seq"] for w in data["windows"]]
    figure = Figure(figsize=(10.5, 3.4), dpi=DPI)
    figure.subplots_adjust(left=0.08, right=0.83, top=0.9, bottom=0.16)
    ax = figure.subplots()
    bands: list[tuple[int, int, int | None]] = []  # (first window, last window, champion)
    for w in windows:
        if bands and bands[-1][2] == w["champion"]:
            bands[-1] = (bands[-1][0], w["seq"], w["champion"])
        else:
            bands.append((w["seq"], w["seq"], w["champion"]))
    for k, (start, end, version) in enumerate(bands):
        ax.axvspan(start - 0.5, end + 0.5, color="#cfd8e3" if k % 2 else "#eef2f6", lw=0)
        ax.text((start + end) / 2, 1.02, f"v{version}", ha="center", va="bottom", fontsize=9)
    x = [w["seq"] for w in windows]
    _overall(ax, x, [w["accuracy"].get("overall", math.nan) for w in windows])
    for group in groups:
        ax.plot(
            x,
            [w["accuracy"].get(group, math.nan) for w in windows],
            "o-",
            color=group_colour(groups, group),
            lw=1.2,
            ms=3,
            label=f"group {group}",
        )
    for w in data["windows"]:
        if w["promoted"]:
            ax.axvline(w["seq"] + 0.5, color="#2ca02c", lw=1.5)
            ax.text(w["seq"] + 0.55, 0.03, f"v{w['promoted']} in", color="#2ca02c", fontsize=8)
        if w["rejected"]:
            ax.plot([w["seq"]], [0.06], "X", color=DRIFT_RED, ms=10)
            ax.text(w["seq"] + 0.15, 0.1, f"v{w['rejected']} rejected", color=DRIFT_RED, fontsize=8)
        if w["drifted"]:
            ax.plot([w["seq"]], [0.97], "v", color=DRIFT_RED, ms=7)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("prequential accuracy")
    ax.set_xlabel("window (band: serving champion; \u25bc drift)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    _window_axis(ax, seqs)
    return data_uri(figure)


def gate_differences(data: dict[str, Any]) -> str | None:
    """Candidate minus champion accuracy per group (and failed window), with its interval,
    for every version the gate compared; the tolerance is drawn at minus its current setting."""
    versions = [v for v in data["versions"] if v["gate"] and v["gate"]["kind"] == "gate"]
    rows = []
    for v in reversed(versions):
        slices = v["gate"]["groups"] + [c for c in v["gate"]["windows"] if c["verdict"] == "fail"]
        for c in slices:
            subject = c["subject"] if c["subject"].startswith("window") else f"group {c['subject']}"
            rows.append((f"v{v['version']} ({v['status']}) \u00b7 {subject}", c))
    if not rows:
        return None
    height = 1.1 + 0.3 * len(rows)
    figure = Figure(figsize=(10.5, height), dpi=DPI)
    figure.subplots_adjust(left=0.25, right=0.97, top=1 - 0.2 / height, bottom=0.75 / height)
    ax = figure.subplots()
    y = np.arange(len(rows))[::-1]
    for yi, (_, c) in zip(y, rows, strict=True):
        colour = VERDICT_COLOURS.get(c["verdict"], "#7f7f7f")
        low, high, diff = c["low"], c["high"], c["difference"]
        if low is not None and high is not None:
            ax.plot([low, high], [yi, yi], color=colour, lw=2.5, alpha=0.6)
        ax.plot([diff], [yi], "o", color=colour, ms=6)
    tolerance = data["settings"]["gate_tolerance"]
    ax.axvline(0, color="black", lw=0.8)
    ax.axvline(-tolerance, color=DRIFT_RED, ls=":", lw=1.2)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
    ax.set_xlabel(
        f"candidate \u2212 champion accuracy, with interval (dotted: \u2212tolerance "
        f"{tolerance}; green pass, red fail, grey not decisive)"
    )
    ax.grid(axis="x", alpha=0.3)
    return data_uri(figure)


def thumbnail(image: SampleImage, scale: int = 3) -> str:
    """A sample as a PNG data URI, enlarged ``scale`` times with crisp pixels."""
    return _png_uri(_upscale(image.pixels, scale))


def _png_uri(pixels: np.ndarray) -> str:
    png = encode_png(torch.from_numpy(np.ascontiguousarray(pixels)))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _upscale(pixels: np.ndarray, scale: int) -> np.ndarray:
    """``(C, H, W)`` enlarged ``scale`` times by repeating pixels (crisp, no blur)."""
    return np.repeat(np.repeat(pixels, scale, axis=1), scale, axis=2)


def grad_cam_overlay(image: SampleImage, cam: np.ndarray, scale: int = 3) -> str:
    """The image in grey with a Grad-CAM map (``(h, w)`` in [0, 1]) over it in jet, as a PNG URI.

    Composited with numpy rather than drawn as a figure: a dozen of these per page cost
    milliseconds, where as many matplotlib axes cost seconds.
    """
    pixels = image.pixels.astype(np.float32) / 255.0
    grey = pixels.mean(axis=0) if pixels.shape[0] > 1 else pixels[0]
    size = grey.shape
    upsampled = torch.nn.functional.interpolate(
        torch.from_numpy(np.asarray(cam, dtype=np.float32))[None, None],
        size=size,
        mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    heat = _JET(np.clip(upsampled, 0.0, 1.0))[..., :3]
    blended = (1 - CAM_ALPHA) * grey[..., None] + CAM_ALPHA * heat
    rgb = (np.clip(blended, 0.0, 1.0) * 255).round().astype(np.uint8).transpose(2, 0, 1)
    return _png_uri(_upscale(rgb, scale))


def grad_cam_cells(explanation: Explanation) -> list[dict[str, Any]]:
    """Per sample: the image and each model's overlay as PNG URIs, with captions."""
    cells = []
    for sample in explanation.samples:
        image = sample.image
        cells.append(
            {
                "sample_id": image.sample_id,
                "caption": f"label {image.label} \u00b7 group {image.group} \u00b7 "
                f"window {image.window}",
                "image": thumbnail(image),
                "maps": [
                    {
                        "role": role,
                        "version": version,
                        "predicted": sample.predictions[role],
                        "correct": sample.predictions[role] == image.label,
                        "uri": grad_cam_overlay(image, sample.maps[role]),
                    }
                    for role, version in explanation.models.items()
                ],
            }
        )
    return cells
