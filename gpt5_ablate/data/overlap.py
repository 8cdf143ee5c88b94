"""A leak detector: how much of the validation stream also occurs, verbatim, in training.

``val_train_overlap`` cuts the validation token stream into windows of ``window`` tokens every
``stride`` tokens and reports the share of them found anywhere (at any offset) in the training
stream. Windows are compared by a 64-bit polynomial hash, so a handful of the hundreds of
millions of comparisons could collide: a negligible error for a percentage.

Memory stays flat: the validation hashes (a few per ``stride`` tokens) are kept in a sorted
array, and the training stream, which may be memory-mapped and much larger, is hashed and looked
up one chunk at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

WINDOW = 32  # tokens per window: long enough that a shared window means shared text
STRIDE = 32  # validation windows start every STRIDE tokens (non-overlapping at 32)
CHUNK_TOKENS = 1 << 24  # tokens hashed at a time
MAX_TRAIN_TOKENS = 1 << 30  # training tokens scanned at most (a bound on the time taken)
_BASE = 0x100000001B3  # an odd multiplier: the hash is a polynomial in it, mod 2**64
_MOD = 1 << 64


def window_hashes(tokens: np.ndarray, window: int) -> np.ndarray:
    """The hash of every run of ``window`` consecutive tokens: ``len(tokens) - window + 1``
    values, ``h = sum((t[i + k] + 1) * B**(window - 1 - k))`` mod 2**64.

    Built by doubling (hashes of 1, 2, 4... tokens combine as ``h(a + b) = h(a) * B**b + h(b)``),
    so it takes about log2(window) vector passes instead of ``window``.
    """
    n = len(tokens) - window + 1
    if n <= 0:
        return np.empty(0, dtype=np.uint64)
    piece, piece_len = np.asarray(tokens).astype(np.uint64) + np.uint64(1), 1
    result: np.ndarray | None = None
    result_len = 0
    remaining = window
    with np.errstate(over="ignore"):  # wrapping around 2**64 is the modulus
        while True:
            if remaining & 1:
                if result is None:
                    result, result_len = piece, piece_len
                else:
                    m = min(len(result), len(piece) - result_len)
                    scale = np.uint64(pow(_BASE, piece_len, _MOD))
                    result = result[:m] * scale + piece[result_len : result_len + m]
                    result_len += piece_len
            remaining >>= 1
            if not remaining:
                break
            m = len(piece) - piece_len
            scale = np.uint64(pow(_BASE, piece_len, _MOD))
            piece = piece[:m] * scale + piece[piece_len : piece_len + m]
            piece_len *= 2
    assert result is not None
    return result[:n]


def _chunked_hashes(
    stream: np.ndarray, window: int, limit: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(first window's position, hashes)`` over the stream, one chunk at a time."""
    end = len(stream) if limit is None else min(len(stream), limit)
    for start in range(0, max(end - window + 1, 0), CHUNK_TOKENS):
        piece = np.asarray(stream[start : min(start + CHUNK_TOKENS + window - 1, end)])
        yield start, window_hashes(piece, window)


def val_train_overlap(
    train: np.ndarray, val: np.ndarray, window: int = WINDOW, stride: int = STRIDE
) -> dict[str, Any]:
    """Share of validation windows (every ``stride`` tokens) occurring verbatim in training.

    ``train`` / ``val``: token arrays of any shape (packed blocks are read as one stream).
    Returns the fraction (``overlap``) and what it was measured over.
    """
    train_flat, val_flat = train.reshape(-1), val.reshape(-1)
    parts = []
    for start, hashes in _chunked_hashes(val_flat, window):
        first = (-start) % stride  # keep windows at global positions 0, stride, 2 * stride...
        parts.append(hashes[first::stride])
    val_hashes = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)
    unique, inverse = np.unique(val_hashes, return_inverse=True)
    found = np.zeros(len(unique), dtype=bool)
    scanned = min(len(train_flat), MAX_TRAIN_TOKENS)
    if len(unique):
        # A bit table on the hashes' low bits rejects most training windows with one gather;
        # only the few that pass are looked up (a binary search) among the validation hashes.
        mask = np.uint64(max(1 << 16, 1 << int(8 * len(unique)).bit_length()) - 1)
        table = np.zeros(int(mask) + 1, dtype=bool)
        table[unique & mask] = True
        for _, hashes in _chunked_hashes(train_flat, window, scanned):
            hashes = hashes[table[hashes & mask]]
            where = np.searchsorted(unique, hashes).clip(max=len(unique) - 1)
            found[where[unique[where] == hashes]] = True
    return {
        "overlap": float(found[inverse].mean()) if len(val_hashes) else 0.0,
        "n_val_windows": len(val_hashes),
        "window": window,
        "stride": stride,
        "train_tokens_scanned": int(scanned),
    }
