import numpy as np

from drift.label import label_shift


def test_label_shift_detects_a_tripled_class_share() -> None:
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 10, size=600)
    probs = np.full(10, 0.1)
    probs[3] = 0.3
    probs /= probs.sum()
    window = rng.choice(10, size=256, p=probs)
    result = label_shift(ref, ["a"] * 600, window, ["a"] * 256, n_classes=10)
    assert result.is_drift and result.p_value < 1e-4


def test_label_shift_quiet_on_the_same_mix() -> None:
    rng = np.random.default_rng(1)
    alarms = sum(
        label_shift(
            rng.integers(0, 10, 600),
            ["a"] * 600,
            rng.integers(0, 10, 256),
            ["a"] * 256,
            n_classes=10,
        ).is_drift
        for _ in range(30)
    )
    assert alarms <= 1
