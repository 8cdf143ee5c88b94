"""Evaluation: next-token loss over held-out blocks, for one process and many alike.

Two uses: the periodic eval on a fixed sample of validation blocks (cheap, every ``eval_every``
steps), and the final pass over the entire validation and test splits, which also sums the loss
per document (the analysis bootstraps over documents to show evaluation-set noise) and, for
test, per position in the sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from gpt5_ablate.train.distributed import DistContext
from gpt5_ablate.train.runtime import Runtime


@dataclass
class EvalResult:
    loss: float  # mean next-token cross-entropy, nats
    accuracy: float
    tokens: int
    # Final pass only: per document, the summed loss (nats) and the token count.
    doc_loss_sum: np.ndarray | None = field(default=None, repr=False)
    doc_tokens: np.ndarray | None = field(default=None, repr=False)
    # With ``by_position``: per position 0..seq_len-1, the summed loss (nats) and token count.
    pos_loss_sum: np.ndarray | None = field(default=None, repr=False)
    pos_tokens: np.ndarray | None = field(default=None, repr=False)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 50.0))

    def metrics(self) -> dict[str, float]:
        return {"loss": self.loss, "accuracy": self.accuracy, "perplexity": self.perplexity}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    blocks: np.ndarray,
    batch_size: int,
    runtime: Runtime,
    dist: DistContext | None = None,
    doc_ids: np.ndarray | None = None,
    n_docs: int = 0,
    by_position: bool = False,
) -> EvalResult:
    """Score ``blocks`` [n, seq_len + 1]; with ``doc_ids`` [n, seq_len] (the document of each
    target token) also the loss per document; with ``by_position`` also the loss per position
    of the target in the sequence.

    Under torchrun every rank scores a contiguous share and the sums are added, so the result
    equals a single process's. Every rank runs the same number of forward passes (a rank with no
    blocks left scores a stand-in batch it ignores): FSDP's forward gathers parameters
    collectively, so a rank that stopped early would leave the others waiting.
    """
    dist = dist or DistContext()
    bounds = np.linspace(0, len(blocks), dist.world_size + 1).astype(int)
    start, stop = int(bounds[dist.rank]), int(bounds[dist.rank + 1])
    n_batches = math.ceil(int(np.diff(bounds).max()) / batch_size)
    sums = torch.zeros(3, dtype=torch.float64, device=runtime.device)  # loss, correct, tokens
    per_doc = doc_ids is not None
    doc_sums = torch.zeros(2, max(n_docs, 1), dtype=torch.float64, device=runtime.device)
    seq_len = blocks.shape[1] - 1
    pos_sums = torch.zeros(2, seq_len, dtype=torch.float64, device=runtime.device)
    was_training = model.training
    model.eval()
    for i in range(n_batches):
        lo, hi = start + i * batch_size, min(start + (i + 1) * batch_size, stop)
        real = hi > lo
        rows = slice(lo, hi) if real else slice(0, 1)
        batch = torch.from_numpy(np.asarray(blocks[rows], dtype=np.int64)).to(runtime.device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with runtime.autocast():
            logits, _ = model(inputs)
        token_loss = F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), reduction="none"
        ).double()  # [B * T]
        if not real:
            continue
        sums[0] += token_loss.sum()
        sums[1] += (logits.argmax(dim=-1) == targets).sum()
        sums[2] += targets.numel()
        if per_doc:
            ids = torch.from_numpy(np.asarray(doc_ids[rows], dtype=np.int64)).to(runtime.device)
            doc_sums[0].index_add_(0, ids.flatten(), token_loss)
            doc_sums[1].index_add_(0, ids.flatten(), torch.ones_like(token_loss))
        if by_position:
            pos_sums[0] += token_loss.view(targets.shape).sum(dim=0)
            pos_sums[1] += targets.shape[0]
    model.train(was_training)
    loss_sum, correct, n_tokens = dist.sum_(sums).tolist()
    result = EvalResult(loss_sum / max(n_tokens, 1), correct / max(n_tokens, 1), int(n_tokens))
    if per_doc:
        doc_sums = dist.sum_(doc_sums).cpu().numpy()
        result.doc_loss_sum, result.doc_tokens = doc_sums[0][:n_docs], doc_sums[1][:n_docs]
    if by_position:
        pos_sums = dist.sum_(pos_sums).cpu().numpy()
        result.pos_loss_sum, result.pos_tokens = pos_sums[0], pos_sums[1]
    return result
