"""Image stores: pixels in the rows (default) or in a content-addressed folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import digit_samples, make_settings
from sqlalchemy import func, select

from service.config import Settings, load_settings
from service.context import Service
from service.errors import ImageMissing, SettingsInvalid
from service.ingest.samples import ingest
from service.store.batches import load_batch
from service.store.images import DatabaseImages, FolderImages, image_store
from service.store.schema import Sample, Stream, Window


def _service(tmp_path: Path, database_url: str, images: str) -> Service:
    return Service.from_settings(make_settings(tmp_path, database_url, image_store=images))


def _all(service: Service, stream: str = "s") -> torch.Tensor:
    with service.store.session() as session:
        record = session.scalar(select(Stream).where(Stream.name == stream))
        windows = session.scalars(select(Window.id).where(Window.stream_id == record.id)).all()
        return load_batch(session, record, list(windows)).x


def test_a_folder_store_keeps_pixels_in_files_that_load_like_rows(tmp_path, database_url) -> None:
    folder = tmp_path / "images"
    service = _service(tmp_path, database_url, str(folder))
    samples = digit_samples(20)
    assert len(ingest(service.store, service.settings, "s", samples).accepted) == 20
    with service.store.session() as session:
        rows = session.execute(select(Sample.pixels, Sample.content_digest)).all()
    assert all(pixels is None for pixels, _ in rows)
    store = FolderImages(folder)
    assert all(store.path(digest).stat().st_size == 28 * 28 for _, digest in rows)
    assert not list(folder.rglob(".tmp-*"))
    in_files = _all(service)
    service.close()

    reference = _service(tmp_path / "db", f"sqlite:///{tmp_path / 'db.sqlite'}", "database")
    ingest(reference.store, reference.settings, "s", samples)
    assert torch.equal(in_files, _all(reference))
    reference.close()


def test_rows_stored_before_a_switch_to_a_folder_still_load(tmp_path, database_url) -> None:
    before = _service(tmp_path, database_url, "database")
    ingest(before.store, before.settings, "s", digit_samples(6))
    before.close()
    after = _service(tmp_path, database_url, str(tmp_path / "images"))
    ingest(after.store, after.settings, "s", digit_samples(6, seed=1))
    x = _all(after)
    assert x.shape == (12, 1, 28, 28) and bool((x.flatten(1).sum(1) > 0).all())
    after.close()
    back = _service(tmp_path, database_url, "database")
    with pytest.raises(ImageMissing, match="keep their pixels in a folder image store"):
        _all(back)
    back.close()


def test_a_failed_write_to_the_folder_commits_no_row(tmp_path, database_url, monkeypatch) -> None:
    service = _service(tmp_path, database_url, str(tmp_path / "images"))

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        ingest(service.store, service.settings, "s", digit_samples(3))
    monkeypatch.undo()
    with service.store.session() as session:
        assert session.scalar(select(func.count()).select_from(Sample)) == 0
        assert session.scalar(select(Stream.sample_count)) == 0
    assert [p for p in (tmp_path / "images").rglob("*") if p.is_file()] == []
    assert len(ingest(service.store, service.settings, "s", digit_samples(3)).accepted) == 3
    service.close()


def test_a_missing_file_is_named() -> None:
    store = FolderImages(Path("/nonexistent-learnstream-images"))
    with pytest.raises(ImageMissing, match="image abc is missing from the image store"):
        store.get(["abc"])


def test_the_setting_names_the_database_or_an_absolute_folder(tmp_path, monkeypatch) -> None:
    assert isinstance(image_store("database"), DatabaseImages)
    assert isinstance(image_store(str(tmp_path)), FolderImages)
    assert Settings(image_store=str(tmp_path)).image_store == str(tmp_path)
    monkeypatch.setenv("LEARNSTREAM_IMAGE_STORE", "relative/images")
    with pytest.raises(SettingsInvalid) as refused:
        load_settings()
    assert str(refused.value) == (
        "LEARNSTREAM_IMAGE_STORE='relative/images': must be 'database' or an absolute folder path"
    )


def test_deleted_samples_take_their_files_with_them(tmp_path, database_url) -> None:
    from service.samples.deletion import criteria_of, delete_samples

    folder = tmp_path / "images"
    service = _service(tmp_path, database_url, str(folder))
    samples = digit_samples(20)
    ingest(service.store, service.settings, "s", samples)
    with service.store.session() as session:
        digests = dict(session.execute(select(Sample.sample_id, Sample.content_digest)).all())
    gone = [s["id"] for s in samples[:5]]
    result = delete_samples(service, "s", criteria_of(ids=gone), by="dpo", reason="erasure")
    assert result.deleted == 5
    store = FolderImages(folder)
    assert not any(store.path(digests[i]).exists() for i in gone)
    assert all(store.path(d).exists() for i, d in digests.items() if i not in gone)
    assert len(_all(service)) == 15
    service.close()


def test_a_deleted_stream_takes_its_files_with_it(tmp_path, database_url) -> None:
    from service.store.removal import delete_stream

    folder = tmp_path / "images"
    service = _service(tmp_path, database_url, str(folder))
    ingest(service.store, service.settings, "s", digit_samples(10))
    ingest(service.store, service.settings, "t", digit_samples(10))
    assert len([p for p in folder.rglob("*") if p.is_file()]) == 20
    assert delete_stream(service.store, tmp_path / "models", "s")
    assert len([p for p in folder.rglob("*") if p.is_file()]) == 10
    assert len(_all(service, "t")) == 10
    service.close()
