"""Reading stored samples back as tensors for prediction, drift, training and the gate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.store.images import read_pixels
from service.store.schema import Sample, Stream


@dataclass
class Batch:
    """Samples in arrival order: ``x`` is ``uint8 (N, C, H, W)``, the rest are aligned arrays."""

    row_ids: np.ndarray
    sample_ids: list[str]
    x: torch.Tensor
    y: np.ndarray
    groups: np.ndarray
    windows: np.ndarray
    splits: np.ndarray

    def __len__(self) -> int:
        return len(self.sample_ids)

    def where(self, mask: np.ndarray) -> Batch:
        """The samples where ``mask`` is true."""
        index = np.flatnonzero(mask)
        return Batch(
            row_ids=self.row_ids[index],
            sample_ids=[self.sample_ids[i] for i in index],
            x=self.x[torch.from_numpy(index)],
            y=self.y[index],
            groups=self.groups[index],
            windows=self.windows[index],
            splits=self.splits[index],
        )

    @property
    def y_tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.y.astype(np.int64))


def images_tensor(stored: Sequence[bytes], stream: Stream) -> torch.Tensor:
    """Stored pixels (uint8 at the stream's shape, one image each) as one ``(N, C, H, W)``
    tensor; samples and traffic keep their images alike."""
    shape = (stream.channels, stream.size, stream.size)
    pixels = np.frombuffer(b"".join(stored), dtype=np.uint8)
    return torch.from_numpy(pixels.reshape((len(stored), *shape)).copy())


def load_batch(
    session: Session,
    stream: Stream,
    window_ids: list[int],
    split: str | None = None,
    *,
    quarantined: bool = False,
) -> Batch:
    """The samples of ``window_ids`` (optionally one split), in arrival order, pixels from the
    rows or from the image store that holds them; quarantined samples only with
    ``quarantined`` (the window's own processing sees every sample)."""
    query = select(
        Sample.id,
        Sample.sample_id,
        Sample.pixels,
        Sample.content_digest,
        Sample.label,
        Sample.group,
        Sample.window_id,
        Sample.split,
    ).where(Sample.stream_id == stream.id, Sample.window_id.in_(window_ids))
    if split is not None:
        query = query.where(Sample.split == split)
    if not quarantined:
        query = query.where(Sample.quarantined.is_(False))
    rows = session.execute(query.order_by(Sample.seq)).all()
    stored = read_pixels(session, [(r.pixels, r.content_digest) for r in rows]) if rows else []
    x = images_tensor(stored, stream)
    return Batch(
        row_ids=np.array([r.id for r in rows], dtype=np.int64),
        sample_ids=[r.sample_id for r in rows],
        x=x,
        y=np.array([r.label for r in rows], dtype=np.int64),
        groups=np.array([r.group for r in rows], dtype=object),
        windows=np.array([r.window_id for r in rows], dtype=np.int64),
        splits=np.array([r.split for r in rows], dtype=object),
    )


def concat(batches: list[Batch]) -> Batch:
    """One batch of several, in the given order."""
    return Batch(
        row_ids=np.concatenate([b.row_ids for b in batches]),
        sample_ids=[i for b in batches for i in b.sample_ids],
        x=torch.cat([b.x for b in batches]),
        y=np.concatenate([b.y for b in batches]),
        groups=np.concatenate([b.groups for b in batches]),
        windows=np.concatenate([b.windows for b in batches]),
        splits=np.concatenate([b.splits for b in batches]),
    )
