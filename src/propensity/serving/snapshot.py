"""Snapshots of the in-process online store, so a restarted server replays only the log's tail.

A snapshot is one file, ``.propensity/snapshots/online-<feature set>-<created µs>.snap``, written to a temporary
name, fsync'd and renamed (so a crash leaves the previous snapshot whole). No pickle: each customer's state is the
explicit JSON codec of :mod:`propensity.serving.state_codec`. Layout::

    b"PSNAP01\\n" | u32 n | header (JSON: format, feature_set_version, watermark_us, created_us, ...)
    blocks: b"C" | u32 length | u32 crc32 | customers (u32 id, u32 read, u32 seen lengths, then the three)
            b"I" | u32 length | u32 crc32 | the event-id hashes (sorted uint64), see EventIdIndex
            b"E" | u32 length | u32 crc32 | JSON {"customers": n}   (the end: a file without it is incomplete)

The header's ``watermark_us`` is the log's ``ingested_at`` up to which every event was applied when the snapshot
began. Customers are encoded a chunk at a time between requests (the server keeps answering), so a state may also
hold events after the watermark; replaying those at start is harmless, the engine ignoring an event id it has
already applied. A snapshot of another feature-set version, of another format, or that fails a check is skipped
with a log line, and the next older one (or the whole log) is used instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from propensity.events.live import EventIdIndex
from propensity.features.online import OnlineFeatureEngine
from propensity.serving.state_codec import StateCodec

log = logging.getLogger(__name__)

MAGIC = b"PSNAP01\n"
FORMAT = 1
KEEP = 2  # snapshots kept per feature set (the newest ones)
CHUNK = 2000  # customers encoded between two yields to the event loop
_U32 = struct.Struct("<I")
_BLOCK = struct.Struct("<cII")
_ENTRY = struct.Struct("<III")


class SnapshotError(ValueError):
    """A snapshot file that cannot be used (damaged, incomplete, or of another format)."""


@dataclass
class SnapshotInfo:
    path: Path
    feature_set_version: str
    watermark_us: int
    created_us: int
    customers: int
    seconds: float = 0.0  # to load it

    @property
    def age_seconds(self) -> float:
        return max(0.0, time.time() - self.created_us / 1e6)


def snapshot_dir(state_dir: Path) -> Path:
    return state_dir / "snapshots"


def _blocks(engine: OnlineFeatureEngine, index: EventIdIndex | None, header: dict[str, Any]
            ) -> Iterator[bytes]:  # fmt: skip
    """The file's bytes, a block at a time (one block per CHUNK customers)."""
    codec = StateCodec(engine.state_layout())
    head = orjson.dumps(header)
    yield MAGIC + _U32.pack(len(head)) + head
    ids = engine.customer_ids()
    written = 0
    for start in range(0, len(ids), CHUNK):
        parts = []
        for cid in ids[start : start + CHUNK]:
            state = engine.export_customer(cid)
            if state is None:
                continue
            c, r, s = cid.encode(), codec.encode_read(state), codec.encode_seen(state)
            parts.append(_ENTRY.pack(len(c), len(r), len(s)) + c + r + s)
            written += 1
        payload = b"".join(parts)
        yield _BLOCK.pack(b"C", len(payload), zlib.crc32(payload)) + payload
    if index is not None:
        payload = index.sorted_hashes.tobytes()
        yield _BLOCK.pack(b"I", len(payload), zlib.crc32(payload)) + payload
    end = orjson.dumps({"customers": written})
    yield _BLOCK.pack(b"E", len(end), zlib.crc32(end)) + end


def _header(engine: OnlineFeatureEngine, watermark_us: int) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "feature_set_version": str(engine.version),
        "watermark_us": int(watermark_us),
        "created_us": int(time.time() * 1e6),
        "engine_watermark": int(engine.watermark),
        "events_applied": int(engine.events_applied),
        "customers": engine.customers,
    }


def _paths(directory: Path, header: dict[str, Any]) -> tuple[Path, Path]:
    name = f"online-{header['feature_set_version']}-{header['created_us']:020d}.snap"
    return directory / name, directory / f".{name}.tmp"


def _finish(directory: Path, tmp: Path, final: Path, fd: int) -> None:
    os.fsync(fd)
    os.close(fd)
    os.replace(tmp, final)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    mine = sorted(directory.glob(f"online-{final.name.split('-')[1]}-*.snap"))
    for old in mine[:-KEEP]:
        old.unlink(missing_ok=True)


def write_snapshot(
    engine: OnlineFeatureEngine, directory: Path, watermark_us: int, index: EventIdIndex | None = None
) -> Path:
    """Write a snapshot in one go (at shutdown, in tests); returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    header = _header(engine, watermark_us)
    final, tmp = _paths(directory, header)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for block in _blocks(engine, index, header):
            os.write(fd, block)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    _finish(directory, tmp, final, fd)
    return final


async def write_snapshot_async(
    engine: OnlineFeatureEngine, directory: Path, watermark_us: int, index: EventIdIndex | None = None
) -> Path:
    """:func:`write_snapshot` on a serving event loop: one chunk of customers at a time, yielding between them
    so requests keep being answered; the file work in a thread."""
    directory.mkdir(parents=True, exist_ok=True)
    header = _header(engine, watermark_us)
    final, tmp = _paths(directory, header)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for block in _blocks(engine, index, header):
            await asyncio.to_thread(os.write, fd, block)
        await asyncio.to_thread(_finish, directory, tmp, final, fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return final


def _read_header(data: bytes, path: Path) -> tuple[dict[str, Any], int]:
    if not data.startswith(MAGIC):
        raise SnapshotError(f"{path.name}: not a propensity snapshot (or of another format)")
    (n,) = _U32.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _U32.size
    header = orjson.loads(data[start : start + n])
    if header.get("format") != FORMAT:
        raise SnapshotError(
            f"{path.name}: snapshot format {header.get('format')}, this version reads {FORMAT}"
        )
    return header, start + n


def load_snapshot(
    directory: Path, engine: OnlineFeatureEngine, index: EventIdIndex | None = None
) -> SnapshotInfo | None:
    """Load the newest usable snapshot of ``engine``'s feature set into the (empty) engine, and its id hashes into
    ``index``; None when there is none. Unusable ones are skipped with a log line."""
    if not directory.is_dir():
        return None
    candidates = sorted(
        directory.glob("online-*.snap"), key=lambda p: p.name.rsplit("-", 1)[-1], reverse=True
    )
    for path in candidates:
        started = time.perf_counter()
        try:
            info = _load(path, engine, index)
        except (SnapshotError, ValueError, KeyError, TypeError, IndexError, struct.error, OSError) as exc:
            engine.clear()
            log.warning("online snapshot %s ignored: %s", path.name, exc)
            continue
        if info is None:
            continue
        info.seconds = time.perf_counter() - started
        return info
    return None


def _load(path: Path, engine: OnlineFeatureEngine, index: EventIdIndex | None) -> SnapshotInfo | None:
    data = path.read_bytes()
    header, pos = _read_header(data, path)
    if header["feature_set_version"] != str(engine.version):
        log.info(
            "online snapshot %s ignored: feature set %s, the project's is now %s",
            path.name, header["feature_set_version"], engine.version,
        )  # fmt: skip
        return None
    codec = StateCodec(engine.state_layout())
    customers = 0
    hashes = None
    ended = False
    view = memoryview(data)
    while pos < len(data):
        kind, length, crc = _BLOCK.unpack_from(data, pos)
        pos += _BLOCK.size
        payload = view[pos : pos + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            raise SnapshotError(f"{path.name}: damaged block at byte {pos} (checksum)")
        pos += length
        if kind == b"C":
            p = 0
            while p < length:
                lc, lr, ls = _ENTRY.unpack_from(payload, p)
                p += _ENTRY.size
                cid = bytes(payload[p : p + lc]).decode()
                p += lc
                read = bytes(payload[p : p + lr])
                p += lr
                seen = bytes(payload[p : p + ls])
                p += ls
                engine.import_customer(cid, codec.decode(read, seen))
                customers += 1
        elif kind == b"I":
            hashes = np.frombuffer(payload, dtype=np.uint64).copy()
        elif kind == b"E":
            if orjson.loads(bytes(payload)).get("customers") != customers:
                raise SnapshotError(f"{path.name}: the customer count does not match its end record")
            ended = True
            break
        else:
            raise SnapshotError(f"{path.name}: unknown block {kind!r}")
    if not ended:
        raise SnapshotError(f"{path.name}: incomplete (no end record)")
    engine.watermark = max(engine.watermark, int(header.get("engine_watermark", engine.watermark)))
    engine.events_applied = int(header.get("events_applied", 0))
    if index is not None and hashes is not None:
        index.add_sorted(hashes, unique=True)
    return SnapshotInfo(path, header["feature_set_version"], int(header["watermark_us"]),
                        int(header["created_us"]), customers)  # fmt: skip
