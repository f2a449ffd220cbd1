"""``learnstream submit``'s folder plan and folding, with the real ingest as the sender."""

from __future__ import annotations

import base64
import itertools
from pathlib import Path

from helpers import digit_samples

from service.context import Service
from service.ingest.samples import ingest
from service.ingest.submission import folder_calls, plan_folder, submit_calls


def _write_folder(folder: Path, count: int, seed: int) -> list[str]:
    """``count`` digit PNGs in label subfolders, each named by its index in its class."""
    names = []
    per_class: dict[int, int] = {}
    for sample in digit_samples(count, seed=seed):
        label = int(sample["label"])
        per_class[label] = per_class.get(label, 0) + 1
        path = folder / str(label) / f"{per_class[label]:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(sample["image"]))
        names.append(str(path.relative_to(folder)))
    return names


def _submit(service: Service, folder: Path, stream: str, seed: int = 0, batch: int = 16):  # type: ignore[no-untyped-def]
    plan = plan_folder(folder, None, "cam1", seed)

    def send(samples):  # type: ignore[no-untyped-def]
        return ingest(service.store, service.settings, stream, samples).to_dict()

    return submit_calls(folder_calls(folder, plan, batch), send, plan.missing)


def test_new_images_under_old_file_names_are_new_samples(sqlite_service, tmp_path) -> None:
    first, second = tmp_path / "batch1", tmp_path / "batch2"
    names = _write_folder(first, 60, seed=1)
    _write_folder(second, 60, seed=2)
    one = _submit(sqlite_service, first, "s")
    assert (one.accepted, one.duplicates, one.rejected) == (60, 0, [])
    shared = set(names) & {str(p.relative_to(second)) for p in second.rglob("*.png")}
    print(f"file names shared by the two batches: {len(shared)} of 60")
    assert len(shared) >= 40  # the same names, other images
    two = _submit(sqlite_service, second, "s")
    assert (two.accepted, two.duplicates) == (60, 0)
    again = _submit(sqlite_service, second, "s", seed=7)  # resent in another order
    assert (again.accepted, again.duplicates) == (0, 60)


def test_a_label_folder_layout_is_sent_in_a_seeded_mixed_order(tmp_path) -> None:
    _write_folder(tmp_path, 200, seed=3)
    order = [f.label for f in plan_folder(tmp_path, None, "g", seed=0).files]
    assert order == [f.label for f in plan_folder(tmp_path, None, "g", seed=0).files]
    assert order != [f.label for f in plan_folder(tmp_path, None, "g", seed=1).files]
    # Sorted paths would send 0,0,...,1,1,...: 9 label changes in 200. Shuffled: about 180.
    changes = sum(a != b for a, b in itertools.pairwise(order))
    print(f"label changes between consecutive files: {changes} of 199 (sorted order: 9)")
    assert changes > 120
    first_window = order[:64]
    assert len(set(first_window)) == 10  # every class in the first call's worth


def test_a_csv_is_sent_in_its_order_and_names_missing_files(tmp_path) -> None:
    folder = tmp_path / "images"
    names = _write_folder(folder, 12, seed=4)
    (folder / "stray.png").write_bytes((folder / names[0]).read_bytes())
    rows = [*list(reversed(names[:10])), "gone.png"]
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "file,label,group\n"
        + "".join(f"{n},{Path(n).parent.name},cam{i % 2}\n" for i, n in enumerate(rows))
    )
    plan = plan_folder(folder, labels, "default", seed=0)
    assert [f.path for f in plan.files] == rows[:10]
    assert [f.group for f in plan.files][:2] == ["cam0", "cam1"]
    assert plan.missing == ["gone.png"]
    assert plan.unlabelled == 3  # two images the CSV skips, and the stray one


def test_rejections_are_grouped_by_reason_with_their_files(sqlite_service, tmp_path) -> None:
    folder = tmp_path / "images"
    _write_folder(folder, 20, seed=5)
    for i in range(3):
        (folder / "3" / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "seven" / "x.png").parent.mkdir()
    (folder / "seven" / "x.png").write_bytes((folder / "3" / "broken0.png").read_bytes()[:4])
    (folder / "cat" / "y.png").parent.mkdir()
    (folder / "cat" / "y.png").write_bytes(next((folder / "1").glob("*.png")).read_bytes())
    result = _submit(sqlite_service, folder, "s", batch=7)
    assert result.accepted == 20 and result.failed
    groups = result.by_reason()
    print({reason: len(files) for reason, files in groups.items()})
    assert next(iter(groups)) == "image: PNG header is truncated or damaged"
    assert sorted(groups["image: PNG header is truncated or damaged"]) == [
        f"3/broken{i}.png" for i in range(3)
    ]
    assert groups["image: not a PNG, JPEG or .npy file"] == ["seven/x.png"]
    assert [r for r in groups if r.startswith("label:")] and ["cat/y.png"] in groups.values()
    assert result.to_dict()["rejected_by_reason"]["image: PNG header is truncated or damaged"] == 3


def test_a_csv_saved_with_a_byte_order_mark_is_read(tmp_path) -> None:
    folder = tmp_path / "images"
    names = _write_folder(folder, 3, seed=6)
    labels = tmp_path / "labels.csv"
    rows = "".join(f"{n},{Path(n).parent.name}\n" for n in names)
    labels.write_text("file,label\n" + rows, encoding="utf-8-sig")  # as Excel saves it
    plan = plan_folder(folder, labels, "default", seed=0)
    assert [f.path for f in plan.files] == names and plan.missing == []
