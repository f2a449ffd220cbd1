"""Continual-learning benchmark: every strategy on rotated digits, against joint training.

Data: sklearn's digits (8x8, upscaled to 28x28, pixels in [0, 1]), split once into disjoint
train and test digits (70/30, stratified, fixed seed). Five domains rotate all of them by 0, 30,
60, 90 and 120 degrees; they arrive in that order, one experience each (domain-incremental:
every experience holds all ten classes). Each strategy trains the SmallCNN through
`learners.update.train_update`, as the service does (a fresh strategy per update, its memory
carried by the exported state), one call per domain.

Metrics are Avalanche's: after each update an evaluation twin (an Avalanche strategy with an
EvaluationPlugin of accuracy_metrics(experience, stream) and forgetting_metrics(experience,
stream), holding the updated weights) is told the experience just learnt (through a training
call with zero epochs, which is how those metrics learn it) and evaluated on the five test
sets. Reported: the final stream accuracy (the mean over the five equal-sized domain test sets)
as "acc" and the final StreamForgetting (mean over the first four domains of accuracy right
after learning the domain minus accuracy at the end) as "forgetting", both in points (0-100);
"seconds" is the wall-clock time of the strategy's five updates (evaluation excluded). Joint
training (naive, one experience holding all five domains' training data) is the upper line;
it is trained to convergence, for JOINT_EPOCH_FACTOR times the epochs of one update (with
the same 4 epochs it reached 92.9 points, below replay and DER, whose every step also
rehearses a replayed half-batch; with 8, 12 and 16 epochs it reached 96.8, 95.3 and 97.7).
The same run times one update (train_update, naive) against a plain PyTorch loop doing the
same training (`update_ratio_vs_plain_torch` = ours / plain) and reports the process's peak
RSS (`learner_rss_mb`, MiB), most of which is the imports: torch and Avalanche (which pulls in
matplotlib, wandb and more) come to about 1 GiB before any work; the progress output says how
much exactly.

    .venv/bin/python bench/continual.py            # full run (about 2.5 minutes on 2 busy cores)
    .venv/bin/python bench/continual.py --quick    # smoke run (well under a minute)

The last line of stdout is one JSON object; the lines before it are progress.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learners.experience import make_dataset
from learners.models import build_model
from learners.strategies import STRATEGY_NAMES, quiet_avalanche
from learners.update import train_update

ANGLES = (0, 30, 60, 90, 120)
SIZE = 28
SEED = 0
BATCH_SIZE = 32
# 0.05 makes MIR (and EWC with large lambdas) diverge here; 0.02 trains every strategy.
LR = 0.02
JOINT_EPOCH_FACTOR = 4
# Memory for the replay-like strategies: 500 samples, 8% of the 6285 training samples.
MEMORY = 500
PARAMS: dict[str, dict] = {
    "naive": {},
    "replay": {"mem_size": MEMORY},
    "ewc": {"ewc_lambda": 300.0},
    "gem": {"patterns_per_exp": MEMORY // len(ANGLES), "memory_strength": 0.5},
    "agem": {"patterns_per_exp": MEMORY // len(ANGLES), "sample_size": 64},
    "lwf": {"alpha": 5.0, "temperature": 2.0},
    "si": {"si_lambda": 1000.0},
    "gdumb": {"mem_size": MEMORY},
    "der": {"mem_size": MEMORY, "alpha": 0.1, "beta": 0.5},
    "mir": {"mem_size": MEMORY, "subsample": 50, "batch_size_mem": 10},
}


@dataclass(frozen=True)
class Domains:
    """Per domain: training images and labels, test images and labels."""

    train: list[tuple[torch.Tensor, torch.Tensor]]
    test: list[tuple[torch.Tensor, torch.Tensor]]


def load_domains(quick: bool) -> Domains:
    import torchvision.transforms.functional as TF
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    images = torch.nn.functional.interpolate(images, size=SIZE, mode="bilinear").clamp(0, 1)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(
        range(len(labels)), test_size=0.3, stratify=digits.target, random_state=SEED
    )
    if quick:
        train_idx, test_idx = train_idx[:200], test_idx[:100]
    train_idx, test_idx = torch.tensor(train_idx), torch.tensor(test_idx)

    def rotate(x: torch.Tensor, angle: int) -> torch.Tensor:
        return TF.rotate(x, float(angle), interpolation=TF.InterpolationMode.BILINEAR)

    return Domains(
        train=[(rotate(images[train_idx], a), labels[train_idx]) for a in ANGLES],
        test=[(rotate(images[test_idx], a), labels[test_idx]) for a in ANGLES],
    )


def avalanche_benchmark(domains: Domains):
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets

    def dataset(x, y):
        return make_dataset(x, y, list(range(len(y))))

    return benchmark_from_datasets(
        train=[dataset(x, y) for x, y in domains.train],
        test=[dataset(x, y) for x, y in domains.test],
    )


class EvaluationTwin:
    """An Avalanche strategy that only evaluates, with accuracy and forgetting metrics."""

    def __init__(self, like: torch.nn.Module) -> None:
        from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
        from avalanche.training import Naive
        from avalanche.training.plugins import EvaluationPlugin

        self.model = copy.deepcopy(like)
        with quiet_avalanche():
            self.strategy = Naive(
                model=self.model,
                optimizer=torch.optim.SGD(self.model.parameters(), lr=0.0),
                criterion=torch.nn.CrossEntropyLoss(),
                train_mb_size=BATCH_SIZE,
                train_epochs=0,
                eval_mb_size=512,
                evaluator=EvaluationPlugin(
                    accuracy_metrics(experience=True, stream=True),
                    forgetting_metrics(experience=True, stream=True),
                    loggers=[],
                ),
                eval_every=-1,
            )

    def after_learning(self, model: torch.nn.Module, experience, test_stream) -> dict:
        """Metrics of `model`, which has just learnt `experience`, on the test stream."""
        self.model.load_state_dict(model.state_dict())
        with quiet_avalanche():
            # Zero epochs: nothing is trained, but the metrics learn which experience this was.
            self.strategy.train(experience, eval_streams=[])
            return self.strategy.eval(test_stream)


def run_strategy(name: str, domains: Domains, bench, epochs: int) -> dict:
    model = build_model(n_classes=10, in_channels=1, input_size=SIZE, seed=SEED)
    twin = EvaluationTwin(model)
    state, seconds, metrics = None, 0.0, {}
    for k, (x, y) in enumerate(domains.train):
        result = train_update(
            model,
            x,
            y,
            sample_ids=[f"d{k}-{i}" for i in range(len(y))],
            strategy=name,
            params=PARAMS[name],
            state=state,
            epochs=epochs,
            batch_size=BATCH_SIZE,
            lr=LR,
            seed=SEED + k,
        )
        seconds += result.seconds
        model, state = result.model, result.state
        metrics = twin.after_learning(model, bench.train_stream[k], bench.test_stream)
    per_domain = [
        round(100 * metrics[f"Top1_Acc_Exp/eval_phase/test_stream/Exp{k:03d}"], 2)
        for k in range(len(ANGLES))
    ]
    return {
        "acc": round(100 * metrics["Top1_Acc_Stream/eval_phase/test_stream"], 2),
        "forgetting": round(100 * metrics["StreamForgetting/eval_phase/test_stream"], 2),
        "seconds": round(seconds, 2),
        "per_domain": per_domain,
    }


def run_joint(domains: Domains, bench, epochs: int) -> float:
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    x = torch.cat([x for x, _ in domains.train])
    y = torch.cat([y for _, y in domains.train])
    model = build_model(n_classes=10, in_channels=1, input_size=SIZE, seed=SEED)
    result = train_update(
        model,
        x,
        y,
        sample_ids=[str(i) for i in range(len(y))],
        strategy="naive",
        params={},
        state=None,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        lr=LR,
        seed=SEED,
    )
    with quiet_avalanche():
        evaluator = Naive(
            model=result.model,
            optimizer=torch.optim.SGD(result.model.parameters(), lr=0.0),
            eval_mb_size=512,
            evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
        )
        metrics = evaluator.eval(bench.test_stream)
    return round(100 * metrics["Top1_Acc_Stream/eval_phase/test_stream"], 2)


def plain_torch_update(model, x, y, epochs: int, seed: int) -> torch.nn.Module:
    """The same training as a naive update, written as a plain PyTorch loop."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=BATCH_SIZE,
        shuffle=True,
        generator=generator,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            criterion(model(xb), yb).backward()
            optimizer.step()
    return model


def update_ratio(domains: Domains, epochs: int, repeats: int) -> tuple[float, float, float]:
    """Median seconds of one naive train_update and of the plain loop on the first domain."""
    x, y = domains.train[0]
    model = build_model(n_classes=10, in_channels=1, input_size=SIZE, seed=SEED)
    ids = [str(i) for i in range(len(y))]
    ours, plain = [], []
    for repeat in range(repeats):
        started = time.perf_counter()
        train_update(
            model,
            x,
            y,
            sample_ids=ids,
            strategy="naive",
            params={},
            state=None,
            epochs=epochs,
            batch_size=BATCH_SIZE,
            lr=LR,
            seed=repeat,
        )
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        plain_torch_update(model, x, y, epochs, seed=repeat)
        plain.append(time.perf_counter() - started)
    mine, theirs = statistics.median(ours), statistics.median(plain)
    return mine / theirs, mine, theirs


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def progress(message: str) -> None:
    print(f"[continual] {message}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, one epoch: a smoke run")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per update")
    args = parser.parse_args()
    epochs = args.epochs or (1 if args.quick else 4)
    warnings.filterwarnings("ignore")
    # The model is tiny: one thread is as fast, and much faster on a busy 2-core machine.
    torch.set_num_threads(1)
    started = time.perf_counter()
    imports_mb = peak_rss_mb()

    domains = load_domains(args.quick)
    bench = avalanche_benchmark(domains)
    progress(
        f"{len(ANGLES)} domains (rotations {ANGLES}), {len(domains.train[0][1])} train and "
        f"{len(domains.test[0][1])} test digits each, {epochs} epochs per update, "
        f"batch {BATCH_SIZE}, lr {LR}"
    )
    joint_started = time.perf_counter()
    joint = run_joint(domains, bench, JOINT_EPOCH_FACTOR * epochs)
    progress(
        f"joint ({JOINT_EPOCH_FACTOR * epochs} epochs on all domains): acc {joint:.2f} "
        f"({time.perf_counter() - joint_started:.1f} s)"
    )

    results = {}
    for name in STRATEGY_NAMES:
        results[name] = run_strategy(name, domains, bench, epochs)
        r = results[name]
        progress(
            f"{name}: acc {r['acc']:.2f} forgetting {r['forgetting']:.2f} "
            f"{r['seconds']:.1f} s; per domain {r['per_domain']} params {PARAMS[name]}"
        )
    best = max(STRATEGY_NAMES, key=lambda n: (results[n]["acc"], -results[n]["forgetting"]))

    ratio, ours, plain = update_ratio(domains, epochs, repeats=1 if args.quick else 3)
    progress(
        f"one update of {len(domains.train[0][1])} samples x {epochs} epochs: "
        f"train_update {ours:.3f} s, plain torch {plain:.3f} s"
    )
    rss_mb = peak_rss_mb()
    b = results[best]
    progress(
        f"best {best}: acc {b['acc']:.2f} vs joint {joint:.2f} (gap {joint - b['acc']:.2f}, "
        f"goal <= 5), forgetting {b['forgetting']:.2f} (goal <= 3), naive forgetting "
        f"{results['naive']['forgetting']:.2f}; wall {time.perf_counter() - started:.0f} s"
    )
    progress(
        "units: acc, joint_acc and forgetting in points (0-100, Avalanche's accuracy x 100); "
        "seconds: wall-clock of a strategy's 5 updates; learner_rss_mb: peak RSS in MiB "
        f"(of which {imports_mb:.0f} MiB after the imports, before any work)"
    )
    print(
        json.dumps(
            {
                "bench": "continual",
                "joint_acc": joint,
                "strategies": {
                    name: {key: r[key] for key in ("acc", "forgetting", "seconds")}
                    for name, r in results.items()
                },
                "best": best,
                "update_ratio_vs_plain_torch": round(ratio, 3),
                "learner_rss_mb": round(rss_mb, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
