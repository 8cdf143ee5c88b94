"""Batches from packed blocks, and the unigram baseline a trained model must beat.

Loading a batch is a fancy index into a memory-mapped array plus a dtype cast: microseconds,
so there is no need for worker processes or prefetching threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from gpt5_ablate.errors import ConfigError, InputError


def _as_numpy(blocks: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(blocks, torch.Tensor):
        blocks = blocks.detach().cpu().numpy()
    if blocks.ndim != 2 or blocks.shape[1] < 2:
        raise InputError(
            f"blocks must have shape [n_blocks, seq_len + 1] with seq_len >= 1, got {tuple(blocks.shape)}."
        )
    return blocks


def _to_device(batch: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``[B, T + 1]`` blocks into int64 ``inputs`` / ``targets`` ``[B, T]`` on ``device``."""
    tokens = torch.from_numpy(batch.astype(np.int64))
    # Contiguous copies: losses call .view(-1) on targets, which a strided slice would not allow.
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    if device.type == "cuda":
        # Page-locked memory lets the copy run asynchronously, overlapping the previous step.
        return (
            inputs.pin_memory().to(device, non_blocking=True),
            targets.pin_memory().to(device, non_blocking=True),
        )
    return inputs.to(device), targets.to(device)


class BlockLoader:
    """Endless shuffled batches of blocks with an exactly resumable position.

    Each epoch visits every block once, in a permutation drawn from a generator seeded by
    ``(seed, epoch)``: the order depends on nothing but those two numbers, so the state is just
    ``(epoch, position)`` and a resumed run sees the very batches an uninterrupted run would.
    A batch that reaches the end of an epoch is completed from the start of the next one.

    Data parallelism: with ``world_size`` > 1, ``batch_size`` is the global batch. Every rank
    draws the same global batch (same seed, same order) and keeps its own contiguous slice of
    ``batch_size // world_size`` blocks, so W ranks together see exactly the batches one process
    would, and the state (a position in the global order) is the same on every rank.
    """

    def __init__(
        self,
        blocks: np.ndarray | torch.Tensor,
        batch_size: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.blocks = _as_numpy(blocks)
        if len(self.blocks) == 0:
            raise InputError("BlockLoader got no blocks: the training split is empty.")
        if batch_size <= 0:
            raise ConfigError(f"batch_size={batch_size} is invalid: it must be >= 1.")
        if seed < 0:
            raise ConfigError(f"seed={seed} is invalid: the data order needs a seed >= 0.")
        if not 0 <= rank < world_size or batch_size % world_size:
            raise ConfigError(
                f"rank={rank}, world_size={world_size}, batch_size={batch_size}: the global batch "
                "must split evenly over the ranks."
            )
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.device = torch.device(device)
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def __len__(self) -> int:
        """Batches per epoch (the last, partial one counted)."""
        return -(-self.n_blocks // self.batch_size)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_blocks)

    def next_indices(self) -> np.ndarray:
        """Block indices of the next batch; advances the position."""
        parts = []
        needed = self.batch_size
        while needed:
            take = min(needed, self.n_blocks - self.position)
            parts.append(self._order[self.position : self.position + take])
            self.position += take
            needed -= take
            if self.position == self.n_blocks:
                self.epoch += 1
                self.position = 0
                self._order = self._permutation(self.epoch)
        return np.concatenate(parts)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)``, int64 ``[batch_size // world_size, seq_len]`` each, on
        ``device``: this rank's slice of the next global batch."""
        indices = self.next_indices()
        if self.world_size > 1:
            per_rank = self.batch_size // self.world_size
            indices = indices[self.rank * per_rank : (self.rank + 1) * per_rank]
        return _to_device(self.blocks[indices], self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "n_blocks": self.n_blocks,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["n_blocks"]) != self.n_blocks:
            raise InputError(
                f"The loader state was saved over {state['n_blocks']} training blocks but this run "
                f"has {self.n_blocks}: the data (corpus, tokenizer or seq_len) changed since the "
                "checkpoint, so its data position cannot be resumed."
            )
        if not 0 <= int(state["position"]) < self.n_blocks:
            raise InputError(f"Invalid loader state position {state['position']}.")
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = self._permutation(self.epoch)


def iterate_blocks(
    blocks: np.ndarray | torch.Tensor, batch_size: int, device: torch.device | str = "cpu"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The blocks once, in order (for evaluation on the fixed held-out set)."""
    array = _as_numpy(blocks)
    for start in range(0, len(array), batch_size):
        yield _to_device(array[start : start + batch_size], torch.device(device))


def unigram_cross_entropy(
    train_blocks: np.ndarray | torch.Tensor,
    val_blocks: np.ndarray | torch.Tensor,
    vocab_size: int,
    chunk_rows: int = 65536,
) -> float:
    """Validation loss, in nats per token, of a unigram model fit on the training blocks.

    p(t) = (count(t) + 1) / (n_train_tokens + vocab_size), add-one smoothed so every token of the
    vocabulary has a finite loss. Counts use every token of the training blocks; the loss is
    averaged over the validation TARGETS (``block[1:]``), the same positions a model's validation
    loss covers. A model that has learned anything beyond token frequencies scores below this.
    """
    train, val = _as_numpy(train_blocks), _as_numpy(val_blocks)
    if val.size == 0:
        raise InputError("unigram_cross_entropy needs at least one validation block.")
    counts = np.zeros(vocab_size, dtype=np.int64)
    # Chunks keep memory flat on large memory-mapped arrays.
    for start in range(0, len(train), chunk_rows):
        chunk = np.asarray(train[start : start + chunk_rows]).reshape(-1)
        binned = np.bincount(chunk, minlength=vocab_size)
        if len(binned) > vocab_size:
            raise InputError(f"training token id {len(binned) - 1} >= vocab_size={vocab_size}.")
        counts += binned
    log_probs = np.log(counts + 1.0) - np.log(counts.sum() + vocab_size)
    total, n = 0.0, 0
    for start in range(0, len(val), chunk_rows):
        targets = np.asarray(val[start : start + chunk_rows, 1:]).reshape(-1).astype(np.int64)
        if targets.size and targets.max() >= vocab_size:
            raise InputError(f"validation token id {targets.max()} >= vocab_size={vocab_size}.")
        total -= float(log_probs[targets].sum())
        n += targets.size
    return total / n
