"""Fuzzing of ingest's per-sample path with hypothesis.

Every example sends one call, ``[good sample, fuzzed sample, good sample]``, through the
real :func:`service.ingest.samples.ingest` on a SQLite store (one per test function, shared
by its examples), and checks the contract: nothing escapes, both good samples are accepted,
and the fuzzed one is accepted (or a duplicate) or rejected with a short reason that names
its field and quotes nothing of the libraries (no source paths), only the caller's own text.
Bounded and seeded (derandomized, no example database) so it stays fast and repeatable.
"""

from __future__ import annotations

import base64
import io
import itertools
import re
import struct
import tempfile
import zlib
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from helpers import digit_samples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image

from service.context import Service
from service.ingest.samples import ingest

# Hypothesis caches (even with database=None) go to the temp folder, not the checkout.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "learnstream-hypothesis")

FIELDS = ("image:", "label:", "group:", "id:", "meta:", "sample:")
# What a library's message would bring along: source files, install folders, paths.
LEAKS = re.compile(r"\.(?:cpp|cc|c|h|py)\b|site-packages|torchvision|csrc|/\w+/")
BOUNDED = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHUNK_TYPES = [b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"tEXt", b"zTXt", b"iCCP", b"acTL"]
_ids = itertools.count()


def _saved(array: np.ndarray, kind: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert("P") if kind == "palette" else image).save(
        buffer, format="JPEG" if kind == "jpeg" else "PNG", **options
    )
    return buffer.getvalue()


@cache
def real_pngs() -> tuple[bytes, ...]:
    """A few real PNGs: grey, RGB, RGBA, palette and 16-bit grey."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    wide = rng.integers(0, 65_536, (7, 9), dtype=np.uint16)
    return (
        _saved(grey, "png"),
        _saved(rgb, "png"),
        _saved(rgba, "png"),
        _saved(rgb, "palette"),
        _saved(wide, "png"),
    )


@cache
def real_jpegs() -> tuple[bytes, ...]:
    """A few real JPEGs: grey, colour, progressive colour."""
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    rgb = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    return (
        _saved(grey, "jpeg"),
        _saved(rgb, "jpeg", quality=80),
        _saved(rgb, "jpeg", progressive=True),
    )


@cache
def good_images() -> tuple[np.ndarray, np.ndarray]:
    """The pixels of two real digits; each call sends them as new pictures with fresh ids."""
    first, second = digit_samples(2, seed=11)
    return tuple(  # type: ignore[return-value]
        np.array(Image.open(io.BytesIO(base64.b64decode(s["image"])))) for s in (first, second)
    )


def good_sample(which: int) -> dict[str, Any]:
    """A real digit made a new picture (its number in the top row's corner pixels), since
    ingest stores one picture once whatever its id."""
    number = next(_ids)
    pixels = good_images()[which].copy()
    pixels[0, :4] = np.frombuffer(number.to_bytes(4, "big"), dtype=np.uint8)
    return {
        "id": f"good-{number}",
        "image": b64(_saved(pixels, "png")),
        "label": which + 1,
        "group": "AB"[which],
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def check_one_call(service: Service, fuzzed: Any) -> None:
    """Ingest ``[good, fuzzed, good]`` and check what the contract promises."""
    good = [good_sample(0), good_sample(1)]
    result = ingest(service.store, service.settings, "fuzz", [good[0], fuzzed, good[1]])
    assert [s["id"] for s in good] == [i for i in result.accepted if i.startswith("good-")]
    reasons = {r["index"]: r["reason"] for r in result.rejected}
    assert set(reasons) <= {1}, result.rejected
    if not reasons:
        # A fuzzed image may decode to a picture stored by an earlier example.
        assert len(result.accepted) + len(result.duplicates) + len(result.conflicts) == 3
        return
    reason = reasons[1]
    assert reason.startswith(FIELDS), reason
    assert len(reason) <= 300, reason
    for leak in LEAKS.findall(reason):
        assert leak in repr(fuzzed), reason  # only an echo of the caller's own text


def image_sample(data: bytes) -> dict[str, Any]:
    return {"id": f"fuzzed-{next(_ids)}", "image": b64(data), "label": 3, "group": "C"}


# --------------------------------------------------------------------------------------------
# Strategies


def flips(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` with up to eight bits flipped."""

    def flipped(positions: list[tuple[int, int]]) -> bytes:
        out = bytearray(data)
        for index, bit in positions:
            out[index] ^= 1 << bit
        return bytes(out)

    position = st.tuples(st.integers(0, len(data) - 1), st.integers(0, 7))
    return st.lists(position, min_size=1, max_size=8).map(flipped)


def mutations(real: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    """Real files truncated, bit-flipped, or with random bytes spliced in."""
    pick = st.sampled_from(real)
    truncated = pick.flatmap(lambda d: st.integers(0, len(d) - 1).map(lambda n: d[:n]))
    flipped = pick.flatmap(flips)
    spliced = pick.flatmap(
        lambda d: st.tuples(st.integers(0, len(d)), st.binary(max_size=64)).map(
            lambda cut: d[: cut[0]] + cut[1] + d[cut[0] :]
        )
    )
    return st.one_of(truncated, flipped, spliced)


def png_chunk(kind: bytes, body: bytes, good_crc: bool) -> bytes:
    crc = zlib.crc32(kind + body) if good_crc else zlib.crc32(body) ^ 0x5A5A5A5A
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


ihdr_bodies = st.builds(
    lambda w, h, depth, colour, rest: struct.pack(">IIBBBBB", w, h, depth, colour, *rest),
    st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
    st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
    st.sampled_from([1, 2, 4, 8, 16, 0, 3, 32]),
    st.sampled_from([0, 2, 3, 4, 6, 1, 7]),
    st.tuples(st.integers(0, 1), st.integers(0, 1), st.integers(0, 1)),
)
idat_bodies = st.one_of(
    st.binary(max_size=300).map(zlib.compress), st.binary(max_size=300), st.just(b"")
)
png_chunks = st.one_of(
    st.tuples(st.just(b"IHDR"), ihdr_bodies, st.booleans()),
    st.tuples(st.just(b"IDAT"), idat_bodies, st.booleans()),
    st.tuples(
        st.one_of(st.sampled_from(CHUNK_TYPES), st.binary(min_size=4, max_size=4)),
        st.binary(max_size=64),
        st.booleans(),
    ),
)
built_pngs = st.builds(
    lambda header, chunks: (
        PNG_SIGNATURE + png_chunk(b"IHDR", header, True) + b"".join(png_chunk(*c) for c in chunks)
    ),
    ihdr_bodies,
    st.lists(png_chunks, max_size=5),
)
pngs = st.one_of(built_pngs, mutations(real_pngs()))

jpeg_segments = st.builds(
    lambda marker, body: bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body,
    st.integers(0xC0, 0xFE),
    st.binary(max_size=64),
)
sof_segments = st.builds(
    lambda marker, h, w, n: (
        bytes([0xFF, marker])
        + struct.pack(">HBHHB", 8 + 3 * n, 8, h, w, n)
        + b"".join(bytes([i + 1, 0x11, 0]) for i in range(n))
    ),
    st.sampled_from([0xC0, 0xC1, 0xC2]),
    st.integers(0, 2**16 - 1),
    st.integers(0, 2**16 - 1),
    st.integers(0, 4),
)
built_jpegs = st.builds(
    lambda segments, tail: b"\xff\xd8" + b"".join(segments) + tail,
    st.lists(st.one_of(jpeg_segments, sof_segments), max_size=6),
    st.one_of(st.just(b"\xff\xd9"), st.binary(max_size=64)),
)
jpegs = st.one_of(built_jpegs, mutations(real_jpegs()))

descrs = st.one_of(
    st.sampled_from(["|u1", "<u2", ">i4", "<f4", "<f8", "<f2", "|b1", "?", "<c16", "|O"]).map(repr),
    st.sampled_from(["<U5", "|V4", "|S3", "<M8[s]", "<m8"]).map(repr),
    st.sampled_from(["[('a', '<u1')]", "('<u1', (2,))", "[('a', '|O')]"]),
    st.text(max_size=12).map(repr),
)
small = st.integers(1, 12)
dims = st.one_of(
    small, small, small, st.integers(-3, 0), st.integers(2**20, 2**40), st.integers(2**62, 2**70)
)
shapes = st.lists(dims, max_size=4).map(lambda s: repr(tuple(s)))


def header_dicts(fortran: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda d, f, s: f"{{'descr': {d}, 'fortran_order': {f}, 'shape': {s}, }}",
        descrs,
        fortran,
        shapes,
    )


def npy_bytes(version: tuple[int, int], header: str, lie: int, body: bytes) -> bytes:
    text = header.encode("utf-8", "replace")
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    size = len(text) + lie
    width = "<H" if version[0] == 1 else "<I"
    length = struct.pack(width, size % (2**16 if version[0] == 1 else 2**32))
    return b"\x93NUMPY" + bytes(version) + length + text + body


@cache
def real_npys() -> tuple[bytes, ...]:
    """A few real ``.npy`` files: uint8 grey, float RGB, bool, int16."""
    rng = np.random.default_rng(2)
    arrays = [
        rng.integers(0, 256, (6, 7), dtype=np.uint8),
        rng.random((5, 4, 3)).astype(np.float32),
        rng.random((4, 4)) > 0.5,
        rng.integers(0, 256, (3, 5, 1), dtype=np.int16),
    ]
    files = []
    for array in arrays:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        files.append(buffer.getvalue())
    return tuple(files)


bodies = st.one_of(
    st.binary(max_size=400), st.integers(0, 1024).map(lambda n: bytes(range(256)) * n)
)
framed_npys = st.builds(
    npy_bytes, st.just((1, 0)), header_dicts(st.just("False")), st.just(0), bodies
)
npys = st.one_of(
    # Mostly well framed: what numpy's header parser then makes of the values is tested.
    framed_npys,
    framed_npys,
    framed_npys,
    st.builds(
        npy_bytes,
        st.sampled_from([(2, 0), (3, 0)]),
        header_dicts(st.sampled_from(["False", "True"])),
        st.just(0),
        bodies,
    ),
    # Anything in the frame: versions, header lengths, header text.
    st.builds(
        npy_bytes,
        st.tuples(st.integers(0, 255), st.integers(0, 255)),
        st.one_of(
            header_dicts(st.sampled_from(["False", "True", "0", "None", "'x'"])),
            st.text(max_size=120),
            st.text(max_size=120).map(lambda t: "{" + t + "}"),
        ),
        st.integers(-80, 80),
        bodies,
    ),
    mutations(real_npys()),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
labels = st.one_of(st.integers(-3, 12), st.sampled_from(list("0123456789")), json_values)
texts = st.one_of(st.text(max_size=200), json_values)


@st.composite
def field_samples(draw: st.DrawFn) -> Any:
    """A sample with its label, group, id or meta replaced by any JSON, or fields added,
    missing or the whole sample any JSON."""
    sample: dict[str, Any] = {
        "id": f"fuzzed-{next(_ids)}",
        "image": good_images()[draw(st.integers(0, 1))],
        "label": 4,
        "group": "C",
    }
    choice = draw(st.sampled_from(["label", "group", "id", "meta", "fields", "whole"]))
    if choice == "label":
        sample["label"] = draw(labels)
    elif choice in ("group", "id"):
        sample[choice] = draw(texts)
    elif choice == "meta":
        sample["meta"] = draw(st.one_of(json_values, st.dictionaries(st.text(), json_values)))
    elif choice == "fields":
        for name in draw(st.sets(st.sampled_from(["image", "label", "group", "id"]))):
            del sample[name]
        sample |= draw(st.dictionaries(st.text(max_size=10), json_values, max_size=2))
    else:
        return draw(json_values)
    return sample


# --------------------------------------------------------------------------------------------
# Tests


@BOUNDED
@given(
    data=st.one_of(
        st.binary(max_size=600),
        st.builds(
            bytes.__add__,
            st.sampled_from([PNG_SIGNATURE, b"\xff\xd8\xff", b"\x93NUMPY"]),
            st.binary(max_size=300),
        ),
    ),
    as_text=st.one_of(st.none(), st.text(max_size=50)),
)
def test_random_bytes(sqlite_service: Service, data: bytes, as_text: str | None) -> None:
    sample = image_sample(data)
    if as_text is not None:  # not base64 at all
        sample["image"] = as_text
    check_one_call(sqlite_service, sample)


@BOUNDED
@given(data=npys)
def test_npy_headers_and_shapes(sqlite_service: Service, data: bytes) -> None:
    check_one_call(sqlite_service, image_sample(data))


@BOUNDED
@given(data=pngs)
def test_png_chunks(sqlite_service: Service, data: bytes) -> None:
    check_one_call(sqlite_service, image_sample(data))


@BOUNDED
@given(data=jpegs)
def test_jpeg_segments(sqlite_service: Service, data: bytes) -> None:
    check_one_call(sqlite_service, image_sample(data))


@BOUNDED
@given(sample=field_samples())
def test_json_fields(sqlite_service: Service, sample: Any) -> None:
    check_one_call(sqlite_service, sample)
