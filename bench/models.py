"""Models benchmark: a user's torchvision classifier through learnstream's real code paths.

On the RGB shapes stream (``service/demo/shapes.py``), for ``torchvision:resnet18`` at 64x64
and ``torchvision:mobilenet_v3_small`` at 96x96, each in ``head`` and ``all`` modes, in a
fresh process per entry (so its peak RSS is its own):

- ``update_seconds``: the fastest of two runs of one update of a 256-sample window (3
  epochs, the default strategy ``replay``, the default batch size and learning rate) through
  ``learners.update.train_update``, the call the learner makes;
  ``update_ratio_vs_plain_torch``: that time over a plain PyTorch loop (SGD with momentum
  0.9, cross-entropy) over the same samples and trainable layers, interleaved with the
  updates in the same process (its fastest of two);
- ``drift_seconds_per_window``: the window's penultimate features and the default covariate
  test (MMD, the default permutations) against a 600-sample reference, configured once;
- ``predict_p50_ms`` / ``predict_p99_ms``: the model on batches of 32 (50 batches);
- ``rss_mb``: the process's peak resident memory;
- ``onnx_max_abs_diff``: the version exported by ``service.models.export`` and run with
  onnxruntime, against PyTorch, on 32 images.

The weights start from a file, as a user's would (written by the bench, loaded by path).
Everything runs on the device ``LEARNSTREAM_DEVICE`` names (``auto``: the first CUDA device
where there is one, else the CPU), reported as ``device``; on CUDA the update trains under
bfloat16 autocast and the plain loop in float32.

    .venv/bin/python bench/models.py            # full run (about 5 minutes on 2 cores)
    .venv/bin/python bench/models.py --quick    # smoke run: one entry

The last line of stdout is one JSON object; the lines before it are progress.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ENTRIES = (
    ("torchvision:resnet18", 64, "head"),
    ("torchvision:resnet18", 64, "all"),
    ("torchvision:mobilenet_v3_small", 96, "head"),
    ("torchvision:mobilenet_v3_small", 96, "all"),
)
FIELDS = (
    "update_seconds",
    "update_ratio_vs_plain_torch",
    "drift_seconds_per_window",
    "predict_p50_ms",
    "predict_p99_ms",
    "rss_mb",
    "onnx_max_abs_diff",
)
WINDOW = 256
EPOCHS = 3
REFERENCE = 600
REPEATS = 2


def _key(arch: str, size: int, mode: str) -> str:
    return f"{arch.split(':')[1]}@{size}/{mode}"


def _weights_file(arch: str, folder: Path) -> Path:
    """The user's weights: the library's own model (1,000 classes), saved with safetensors."""
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    native = torchvision.models.get_model(arch.split(":")[1], weights=None, num_classes=1000)
    path = folder / "weights.safetensors"
    save_file(native.state_dict(), path)
    return path


def _plain_loop(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, s: Any, device: torch.device
) -> float:
    """The same epochs over the same samples, in plain PyTorch, on the trainable layers."""
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=s.learning_rate, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    model.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), s.train_batch_size):
            batch = order[start : start + s.train_batch_size]
            optimizer.zero_grad()
            inputs, targets = (x[batch].float() / 255).to(device), y[batch].to(device)
            loss_fn(model(inputs), targets).backward()
            optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def _predict_ms(
    model: torch.nn.Module, x: torch.Tensor, device: torch.device
) -> tuple[float, float]:
    model.eval().to(device)
    times = []
    with torch.no_grad():
        model((x[:32].float() / 255).to(device))  # warm-up
        for i in range(50):
            start = (i * 32) % (len(x) - 32)
            t0 = time.perf_counter()
            model((x[start : start + 32].float() / 255).to(device)).cpu()  # the answer's copy
            times.append((time.perf_counter() - t0) * 1000)
    model.cpu()
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def _onnx_diff(model: Any, size: int, folder: Path) -> float:
    import onnxruntime as ort

    from learners.strategy_state import StrategyState
    from service.config import Settings
    from service.context import Service
    from service.ingest.samples import get_or_create_stream
    from service.models.export import export_version

    settings = Settings(home=folder / "home", input_channels=3, input_size=size)
    service = Service.from_settings(settings)
    try:
        stream = get_or_create_stream(service.store, "bench", settings).stream
        state = StrategyState("naive", 1, {}, {"experiences_seen": 1, "buffer_ids": []})
        version = service.registry.create_version(
            stream, model, state, parent=None, strategy="naive", params={}, windows=[1],
            arch=model.arch,
        )  # fmt: skip
        artifact = export_version(service, "bench", version, "onnx", folder / "model.onnx")
    finally:
        service.close()
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    x = torch.rand(32, 3, size, size, generator=torch.Generator().manual_seed(1))
    (logits,) = session.run(None, {"pixels": x.numpy()})
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    return float(np.abs(logits - expected).max())


def run_entry(arch: str, size: int, mode: str) -> dict[str, Any]:
    """Every figure of one entry, measured in this process."""
    from drift.detectors import make_covariate_detector
    from drift.features import penultimate_features
    from learners.devices import resolve_device
    from learners.models import build_model
    from learners.update import train_update
    from service.config import Settings
    from service.demo.shapes import CAMERAS, CLASSES, shapes

    s = Settings()
    device = resolve_device(s.device)
    images, labels = shapes(WINDOW + REFERENCE, size=size, seed=0)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    window, reference = slice(0, WINDOW), slice(WINDOW, WINDOW + REFERENCE)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = build_model(
            name=arch, n_classes=len(CLASSES), in_channels=3, input_size=size, seed=s.seed,
            weights=_weights_file(arch, folder), train=mode,  # type: ignore[arg-type]
        )  # fmt: skip
        # Interleaved twice, the fastest of each kept: the machine is small and noisy.
        updates, plains = [], []
        for _ in range(REPEATS):
            result = train_update(
                model, x[window], y[window], sample_ids=[f"s{i}" for i in range(WINDOW)],
                groups=["A"] * WINDOW, strategy=s.strategy, params=dict(s.strategy_params),
                state=None, epochs=EPOCHS, batch_size=s.train_batch_size, lr=s.learning_rate,
                seed=s.seed, device=device,
            )  # fmt: skip
            updates.append(result.seconds)
            plain_model = build_model(**model.arch, seed=s.seed)
            plains.append(_plain_loop(plain_model, x[window], y[window], s, device))
        update_seconds, plain = min(updates), min(plains)
        trained = result.model
        ref_features = penultimate_features(trained.eval(), x[reference].float() / 255)
        detector = make_covariate_detector(
            s.drift_detector, ref_features, ["A"] * REFERENCE, p_value=s.drift_p_value,
            n_permutations=s.drift_permutations, seed=s.seed,
        )  # fmt: skip
        shifted, _ = shapes(WINDOW, size=size, seed=1, camera=CAMERAS["colour_cast"])
        t0 = time.perf_counter()
        features = penultimate_features(trained, torch.from_numpy(shifted).float() / 255)
        drifted = detector.test(features, ["A"] * WINDOW)
        drift_seconds = time.perf_counter() - t0
        p50, p99 = _predict_ms(trained, x[reference], device)
        onnx_diff = _onnx_diff(trained, size, folder)
    return {
        "device": device.type,
        "update_seconds": round(update_seconds, 3),
        "update_ratio_vs_plain_torch": round(update_seconds / plain, 3),
        "plain_torch_seconds": round(plain, 3),
        "drift_seconds_per_window": round(drift_seconds, 3),
        "drift_flagged_colour_cast": bool(drifted.is_drift),
        "predict_p50_ms": round(p50, 2),
        "predict_p99_ms": round(p99, 2),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "onnx_max_abs_diff": float(f"{onnx_diff:.3g}"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one entry (smoke run)")
    parser.add_argument("--entry", help=argparse.SUPPRESS)  # ARCH,SIZE,MODE: run one, in-process
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.entry:
        arch, size, mode = args.entry.split(",")
        print(json.dumps(run_entry(arch, int(size), mode)))
        return
    started = time.perf_counter()
    models: dict[str, dict[str, Any]] = {}
    for arch, size, mode in ENTRIES[:1] if args.quick else ENTRIES:
        answer = subprocess.run(
            [sys.executable, __file__, "--entry", f"{arch},{size},{mode}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        models[_key(arch, size, mode)] = json.loads(answer.stdout.strip().splitlines()[-1])
        print(
            f"{_key(arch, size, mode):<32} {json.dumps(models[_key(arch, size, mode)])}", flush=True
        )
    print(f"({time.perf_counter() - started:.0f} s)", flush=True)
    fields = {name: {k: v[k] for k in FIELDS} for name, v in models.items()}
    # The device LEARNSTREAM_DEVICE names (auto: CUDA where there is one), as the entries ran.
    devices = {v["device"] for v in models.values()}
    print(json.dumps({"bench": "models", "models": fields, "device": ",".join(sorted(devices))}))


if __name__ == "__main__":
    main()
