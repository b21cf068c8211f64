"""Drawing batches for a reader in the trial's own process (``shards.LocalSplit``): the pool of rows waiting to
be drawn, the thread that draws them ahead of the training step, and the page-locked copy a CUDA trial's batches
take in that thread."""

from __future__ import annotations

from typing import Any

import numpy as np


def pinned(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """The batch with its images and masks in page-locked torch tensors (the rest as it is); without CUDA (no
    page-locking to be had) plain CPU tensors, the same values."""
    import torch

    lock = torch.cuda.is_available()
    tensors = {k: torch.from_numpy(np.ascontiguousarray(batch[k])) for k in ("image", "mask") if k in batch}
    return batch | {k: t.pin_memory() if lock else t for k, t in tensors.items()}


def ahead(items, depth: int):
    """``items`` produced by a thread ``depth`` ahead of the consumer, in order: a batch is drawn and copied
    while the consumer (a training step) works; an error surfaces here with its traceback; an abandoned
    iteration stops the thread."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop, done = threading.Event(), object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)
        finally:
            items.close()

    threading.Thread(target=produce, daemon=True, name="batches-ahead").start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


class RowPool:
    """The rows waiting to be drawn into a batch, in arrays that grow only when a file does not fit: a draw
    copies the rows it takes and moves at most as many from the end into the holes they leave: rebuilding the pool
    at every draw would copy the shuffle buffer's images once per batch (about 200 MB per batch of 256 at 224 px,
    the limit of a GPU trial's input path)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, item: dict[str, np.ndarray]) -> None:
        n = len(item["row"])
        for k, v in item.items():
            held = self.arrays.get(k)
            if held is None or len(held) < self.size + n or not np.can_cast(v.dtype, held.dtype):
                grown = np.empty((max(2 * (self.size + n), 1), *v.shape[1:]),
                                 v.dtype if held is None else np.result_type(held.dtype, v.dtype))
                if held is not None:
                    grown[:self.size] = held[:self.size]
                self.arrays[k] = held = grown
            held[self.size:self.size + n] = v
        self.size += n

    def take(self, n: int, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        """``n`` rows: drawn at random without replacement with ``rng``, else the first ``n`` in order."""
        idx = rng.choice(self.size, n, replace=False) if rng is not None else np.arange(n)
        out = {k: np.take(v, idx, axis=0) for k, v in self.arrays.items()}  # 4x faster than v[idx] on images
        rest = self.size - n
        holes = np.sort(idx[idx < rest])  # taken rows before the new end, refilled from the rows after it
        tail = np.setdiff1d(np.arange(rest, self.size), idx, assume_unique=True)
        if rng is None:  # in order: keep the remaining rows' order (shift them to the front)
            for v in self.arrays.values():
                v[:rest] = v[n:self.size].copy()
        else:
            for v in self.arrays.values():
                v[holes] = np.take(v, tail, axis=0)
        self.size = rest
        return out
