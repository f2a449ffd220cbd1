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
from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlalchemy.orm import Session

from service.errors import ImageMissing

DATABASE = "database"


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
        folders: set[Path] = set()
        for digest, pixels in images.items():
            target = self.path(digest)
            if target.exists():  # same digest, same bytes: written by an earlier call
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(pixels)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            folders.add(target.parent)
        for folder in folders:  # the renames themselves must survive a crash
            _fsync_folder(folder)

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


def _fsync_folder(folder: Path) -> None:
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
