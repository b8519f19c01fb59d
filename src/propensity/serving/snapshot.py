"""Snapshots of the in-process online store, so a restarted server replays only the log's tail.

A snapshot is one file, ``.propensity/snapshots/online-<feature set>-<created µs>.snap``, written to a temporary
name, fsync'd and renamed (so a crash leaves the previous snapshot whole). No pickle: each customer's state is the
explicit JSON codec of :mod:`propensity.serving.state_codec`. Layout::

    b"PSNAP01\\n" | u32 n | header (JSON: format, feature_set_version, watermark_us, created_us, ...)
    blocks: b"C" | u32 length | u32 crc32 | customers (u32 id, u32 read, u32 seen lengths, then the three)
            b"I" | u32 length | u32 crc32 | the event-id hashes (sorted uint64), see EventIdIndex
            b"E" | u32 length | u32 crc32 | JSON {"customers": n}   (the end: a file without it is incomplete)

Loading is lazy: the file is memory-mapped, every block's checksum verified and the customers indexed (id → where
their state lies), but a customer's state is decoded only when first needed (a read, an event, an attribute:
see :meth:`~propensity.features.online.OnlineFeatureEngine.hold_cold`), so a server is ready once the index is
built, whatever the number of customers. Events for a still-cold customer wait with it and are applied, in
order, when it is decoded. A snapshot written while customers are still cold copies their bytes as they are.

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
import mmap
import os
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from propensity.events.live import EventIdIndex
from propensity.features.online import CustomerState, OnlineFeatureEngine
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
        cold = engine.cold  # read again each chunk: events between chunks warm customers
        for cid in ids[start : start + CHUNK]:
            raw = cold.raw(cid) if isinstance(cold, SnapshotStates) and engine.is_cold(cid) else None
            if raw is not None:
                r, s = raw
            else:
                state = engine.export_customer(cid)
                if state is None:
                    continue
                r, s = codec.encode_read(state), codec.encode_seen(state)
            c = cid.encode()
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
        with contextlib.suppress(
            OSError
        ):  # Windows keeps a file in use (memory-mapped by a lazy load) in place
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


class SnapshotStates:
    """The customers of a loaded snapshot, decoded on demand (the engine's ``ColdStates``).

    Holds the file memory-mapped and, per customer still cold, where its state's two parts lie."""

    def __init__(self, path: Path, data: mmap.mmap, codec: StateCodec) -> None:
        self.path = path
        self._data = data
        self._codec = codec
        self._where: dict[str, tuple[int, int, int]] = {}  # id -> (offset, read length, seen length)

    def __contains__(self, customer_id: object) -> bool:
        return customer_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    def ids(self) -> Iterable[str]:
        return list(self._where)

    def raw(self, customer_id: str) -> tuple[bytes, bytes] | None:
        """The stored read and seen parts of a cold customer (for copying into the next snapshot)."""
        where = self._where.get(customer_id)
        if where is None:
            return None
        pos, lr, ls = where
        return self._data[pos : pos + lr], self._data[pos + lr : pos + lr + ls]

    def take(self, customer_id: str) -> CustomerState | None:
        raw = self.raw(customer_id)
        if raw is None:
            return None
        state = self._codec.decode(*raw)
        del self._where[customer_id]
        return state

    def discard(self, customer_id: str) -> None:
        self._where.pop(customer_id, None)


def _load(path: Path, engine: OnlineFeatureEngine, index: EventIdIndex | None) -> SnapshotInfo | None:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise SnapshotError(f"{path.name}: empty file")
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # stays valid after the file is closed
    header, pos = _read_header(data[: min(size, 1 << 20)], path)
    if header["feature_set_version"] != str(engine.version):
        log.info(
            "online snapshot %s ignored: feature set %s, the project's is now %s",
            path.name, header["feature_set_version"], engine.version,
        )  # fmt: skip
        data.close()
        return None
    states = SnapshotStates(path, data, StateCodec(engine.state_layout()))
    where = states._where
    hashes = None
    ended = False
    view = memoryview(data)
    payload = view[0:0]
    try:
        while pos < size:
            kind, length, crc = _BLOCK.unpack_from(data, pos)
            pos += _BLOCK.size
            payload = view[pos : pos + length]
            if len(payload) != length or zlib.crc32(payload) != crc:
                raise SnapshotError(f"{path.name}: damaged block at byte {pos} (checksum)")
            if kind == b"C":
                p, end = pos, pos + length
                unpack = _ENTRY.unpack_from
                while p < end:
                    lc, lr, ls = unpack(data, p)
                    p += _ENTRY.size
                    cid = data[p : p + lc].decode()
                    p += lc
                    where[cid] = (p, lr, ls)
                    p += lr + ls
                if p != end:
                    raise SnapshotError(f"{path.name}: a customer block overruns its length")
            elif kind == b"I":
                hashes = np.frombuffer(payload, dtype=np.uint64).copy()
            elif kind == b"E":
                if orjson.loads(bytes(payload)).get("customers") != len(where):
                    raise SnapshotError(f"{path.name}: the customer count does not match its end record")
                ended = True
                break
            else:
                raise SnapshotError(f"{path.name}: unknown block {kind!r}")
            pos += length
    finally:
        del payload
        view.release()
    if not ended:
        raise SnapshotError(f"{path.name}: incomplete (no end record)")
    engine.hold_cold(states)
    engine.watermark = max(engine.watermark, int(header.get("engine_watermark", engine.watermark)))
    engine.events_applied = int(header.get("events_applied", 0))
    if index is not None and hashes is not None:
        index.add_sorted(hashes, unique=True)
    return SnapshotInfo(path, header["feature_set_version"], int(header["watermark_us"]),
                        int(header["created_us"]), len(where))  # fmt: skip
