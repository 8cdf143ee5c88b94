"""Key/value cache for incremental decoding, preallocated and written in place.

Each attention layer decides what it caches (GQA/MHA: rotated keys and values; MLA: the
compressed latent and the shared rotary key) and hands the new entries to ``update``; the cache
stores them in buffers allocated once, on the first write, with the dtype, device and batch size
of that write:

- a full-attention layer gets a linear buffer of ``max_len`` positions;
- a sliding-window layer gets a ring buffer of ``window`` slots: position p lives in slot
  p % window, so the cache never holds more than the window (Beltagy et al. 2020, "Longformer";
  Mistral 7B's "rolling buffer cache", Jiang et al. 2023).

``update`` returns the keys the new queries attend over and a ``KeyIndex`` saying which absolute
positions they hold, from which the attention builds its mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def cached_positions(window: int | None, context_len: int) -> int:
    """How many positions a layer with this window keeps (and attends to) at ``context_len``."""
    return context_len if window is None else min(window, context_len)


@dataclass(frozen=True)
class KeyIndex:
    """Which keys the queries of one attention call may see.

    Queries sit at absolute positions ``q_start .. q_start + Tq - 1``. ``positions`` [S] holds
    the absolute position of each of the S keys, or is None when the keys are positions
    ``0 .. S-1`` in order. Query i sees key j when ``0 <= pos_i - pos_j < window`` (no upper bound
    with ``window=None``). ``unmasked``: every key is visible to every query, no mask needed.
    """

    q_start: int = 0
    positions: torch.Tensor | None = None
    window: int | None = None
    unmasked: bool = False


class LayerKVCache:
    """One layer's cache: named buffers, all sharing one sequence dimension."""

    def __init__(self, max_len: int, window: int | None = None) -> None:
        self.max_len, self.window = max_len, window
        self.ring = window is not None and window < max_len
        self.capacity = window if self.ring else max_len
        self.length = 0  # tokens seen so far = absolute position of the next token
        self.seq_dim = 1
        self.buffers: dict[str, torch.Tensor] = {}
        self.slot_positions: torch.Tensor | None = None  # ring: absolute position in each slot

    @property
    def n_cached(self) -> int:
        return min(self.length, self.capacity)

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """The cached entries (views, in slot order)."""
        return {name: b.narrow(self.seq_dim, 0, self.n_cached) for name, b in self.buffers.items()}

    def _allocate(self, seq_dim: int, new: dict[str, torch.Tensor]) -> None:
        self.seq_dim = seq_dim
        for name, tensor in new.items():
            shape = list(tensor.shape)
            shape[seq_dim] = self.capacity
            self.buffers[name] = tensor.new_empty(shape)
        if self.ring:
            first = next(iter(new.values()))
            self.slot_positions = torch.full(
                (self.capacity,), -1, dtype=torch.long, device=first.device
            )

    def update(
        self, seq_dim: int, **new: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], KeyIndex]:
        """Write the new entries (same length along ``seq_dim``) and return, in the order given,
        the entries the new queries attend over, with their ``KeyIndex``."""
        if not self.buffers:
            self._allocate(seq_dim, new)
        n_new = next(iter(new.values())).size(seq_dim)
        start = self.length
        if start + n_new > self.max_len:
            raise ValueError(
                f"KV cache full: {start} cached + {n_new} new tokens exceed its max_len="
                f"{self.max_len} (GPT.new_kv_cache(max_len))."
            )
        if not self.ring:
            end = start + n_new
            for name, tensor in new.items():
                self.buffers[name].narrow(seq_dim, start, n_new).copy_(tensor)
            self.length = end
            views = tuple(self.buffers[name].narrow(seq_dim, 0, end) for name in new)
            return views, KeyIndex(start, None, self.window)
        return self._update_ring(seq_dim, start, n_new, new)

    def _update_ring(
        self, seq_dim: int, start: int, n_new: int, new: dict[str, torch.Tensor]
    ) -> tuple[tuple[torch.Tensor, ...], KeyIndex]:
        window, positions = self.capacity, self.slot_positions
        assert positions is not None
        if n_new == 1:
            # Overwrite the slot of position start - window, which the new query no longer sees:
            # afterwards the ring holds exactly the positions it sees, so no mask is needed.
            slot = start % window
            for name, tensor in new.items():
                self.buffers[name].narrow(seq_dim, slot, 1).copy_(tensor)
            positions[slot] = start
            self.length += 1
            n = self.n_cached
            views = tuple(self.buffers[name].narrow(seq_dim, 0, n) for name in new)
            return views, KeyIndex(start, positions[:n], window, unmasked=True)
        # Several new tokens: the first of them still needs entries that the last ones would
        # overwrite, so attend over (what the ring holds + all new entries), then keep the last
        # `window` of them.
        n_old = self.n_cached
        new_positions = torch.arange(start, start + n_new, device=positions.device)
        keys = tuple(
            torch.cat((self.buffers[name].narrow(seq_dim, 0, n_old), tensor), dim=seq_dim)
            for name, tensor in new.items()
        )
        key_positions = torch.cat((positions[:n_old], new_positions))
        keep = min(n_new, window)
        slots = new_positions[-keep:] % window
        for name, tensor in new.items():
            self.buffers[name].index_copy_(
                seq_dim, slots, tensor.narrow(seq_dim, n_new - keep, keep)
            )
        positions[slots] = new_positions[-keep:]
        self.length += n_new
        return keys, KeyIndex(start, key_positions, window)

    def nbytes(self) -> int:
        """Bytes of the cached entries (what ``GPT.kv_cache_bytes(length)`` predicts)."""
        return sum(
            b.numel() // self.capacity * self.n_cached * b.element_size()
            for b in self.buffers.values()
        )

    def allocated_nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers.values())


class KVCache:
    """One ``LayerKVCache`` per layer: ``windows[i]`` is layer i's sliding window (None: full),
    ``max_len`` the longest sequence it will hold."""

    def __init__(self, windows: Sequence[int | None], max_len: int) -> None:
        self.max_len = max_len
        self.layers = [LayerKVCache(max_len, window) for window in windows]

    @property
    def length(self) -> int:
        return self.layers[0].length

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)

    def allocated_nbytes(self) -> int:
        return sum(layer.allocated_nbytes() for layer in self.layers)
