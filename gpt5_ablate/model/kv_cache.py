"""Key/value cache for incremental decoding.

Each attention layer decides what it caches (MHA/GQA: rotated keys and values; MLA: the
compressed latent and the shared rotary key), so the cache is a named bag of tensors per layer that
grows along the sequence dimension.
"""

from __future__ import annotations

import torch


class LayerKVCache:
    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.length = 0  # tokens already cached

    def extend(self, seq_dim: int, **new: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Append new entries along ``seq_dim`` and return the full cached tensors, in order."""
        for name, tensor in new.items():
            old = self.tensors.get(name)
            self.tensors[name] = tensor if old is None else torch.cat((old, tensor), dim=seq_dim)
        self.length = next(iter(self.tensors.values())).size(seq_dim)
        return tuple(self.tensors[name] for name in new)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


class KVCache:
    def __init__(self, n_layers: int) -> None:
        self.layers = [LayerKVCache() for _ in range(n_layers)]

    @property
    def length(self) -> int:
        return self.layers[0].length

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)
