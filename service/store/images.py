"""Where stored images' pixels live: in the samples' rows, or in a content-addressed folder.

A sample's pixels are the ``uint8`` bytes of its image at the stream's shape, named by the
sample's ``content_digest`` (sha256 of the stream's name and those bytes). The setting
``image_store`` picks the store that new samples go to:

- ``database`` (the default): the pixels travel in the row's ``pixels`` column, committed
  with it;
- a folder (an absolute path every worker sees, e.g. shared storage for large images):
  one file per digest, ``<folder>/<d[:2]>/<d[2:4]>/<d>``, written to a temporary name,
  fsynced and renamed before the row commits, so a committed row never names a missing
  file. Rows keep ``pixels`` NULL.

Reading (:func:`read_pixels`) takes a row's own pixels when it has them and asks the folder
otherwise, so rows stored before the setting changed still load.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from sqlalchemy.orm import Session

from service.errors import ImageMissing

DATABASE = "database"
FSYNC_THREADS = 16
T = TypeVar("T")


class ImageStore(ABC):
    """Puts pixels by content digest before their rows commit; gets them back."""

    name: str
    in_rows: bool  # whether the pixels travel in the samples' ``pixels`` column

    @abstractmethod
    def put(self, images: Mapping[str, bytes]) -> None:
        """Store each digest's pixels durably before returning (nothing when ``in_rows``)."""

    @abstractmethod
    def get(self, digests: Sequence[str]) -> list[bytes]:
        """The pixels of each digest, in order; raises :class:`ImageMissing`."""

    def discard(self, digests: Collection[str]) -> None:
        """Remove the pixels of digests no stored sample names any more (after the rows'
        deletion committed): nothing to do where the pixels live in the rows."""
        return None


class DatabaseImages(ImageStore):
    """Pixels in the samples' rows (committed with them): nothing to do apart from the rows."""

    name = DATABASE
    in_rows = True

    def put(self, images: Mapping[str, bytes]) -> None:
        return None

    def get(self, digests: Sequence[str]) -> list[bytes]:
        if digests:
            raise ImageMissing(
                f"{len(digests)} sample(s) keep their pixels in a folder image store, but "
                "LEARNSTREAM_IMAGE_STORE is 'database': set it to that folder"
            )
        return []


class FolderImages(ImageStore):
    """Content-addressed files under ``root``; a file is complete once its name exists."""

    in_rows = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = str(root)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:4] / digest

    def put(self, images: Mapping[str, bytes]) -> None:
        """Write each new digest's file under a temporary name, fsync them all at once (the
        filesystem commits many concurrent fsyncs together: one by one, a call of 64 images
        waited on 64 journal commits), then rename them into place and fsync their folders."""
        targets = {d: self.path(d) for d in images}
        new = {d: path for d, path in targets.items() if not path.exists()}
        if not new:  # same digest, same bytes: every file written by an earlier call
            return
        written: dict[str, tuple[int, str]] = {}
        try:
            for digest, target in new.items():
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
                written[digest] = (fd, temporary)
                os.write(fd, images[digest])
            _all_at_once(os.fsync, [fd for fd, _ in written.values()])
            for digest, (_, temporary) in written.items():
                os.replace(temporary, new[digest])
            _all_at_once(fsync_folder, list({target.parent for target in new.values()}))
        finally:
            for fd, temporary in written.values():
                os.close(fd)
                Path(temporary).unlink(missing_ok=True)  # gone once renamed

    def discard(self, digests: Collection[str]) -> None:
        for digest in digests:
            self.path(digest).unlink(missing_ok=True)

    def get(self, digests: Sequence[str]) -> list[bytes]:
        out = []
        for digest in digests:
            try:
                out.append(self.path(digest).read_bytes())
            except FileNotFoundError:
                raise ImageMissing(
                    f"image {digest} is missing from the image store {self.root}"
                ) from None
        return out


def _all_at_once(fn: Callable[[T], None], items: list[T]) -> None:
    """``fn`` on every item from a few threads (fsync releases the GIL); raises the first
    error once every call has ended."""
    if len(items) <= 1:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(min(FSYNC_THREADS, len(items))) as pool:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()


def fsync_folder(folder: Path) -> None:
    """Make a folder's entries (files renamed into it) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def image_store(setting: str) -> ImageStore:
    """The store the setting ``image_store`` names: ``database`` or an absolute folder."""
    if setting == DATABASE:
        return DatabaseImages()
    return FolderImages(Path(setting))


def images_of(session: Session) -> ImageStore:
    """The image store of the :class:`~service.store.engine.Store` that opened ``session``."""
    store = session.info.get("images")
    return store if isinstance(store, ImageStore) else DatabaseImages()


def read_pixels(session: Session, rows: Sequence[tuple[bytes | None, str | None]]) -> list[bytes]:
    """Each row's pixels from ``(pixels, content_digest)``: its own, else the folder's."""
    out: list[bytes | None] = [pixels for pixels, _ in rows]
    elsewhere = [i for i, (pixels, _) in enumerate(rows) if pixels is None]
    if elsewhere:
        digests = [rows[i][1] or "" for i in elsewhere]
        for i, pixels in zip(elsewhere, images_of(session).get(digests), strict=True):
            out[i] = pixels
    return [p or b"" for p in out]
