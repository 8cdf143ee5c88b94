"""The decoder-only transformer, assembled from the components the config names.

    x = token_embedding(idx) (+ learned positions)
    for each block:   x = x + attention(RMSNorm(x))      # pre-norm residual blocks
                      x = x + ffn(RMSNorm(x))
    logits = lm_head(RMSNorm(x))                         # lm_head may share the embedding matrix

The model never branches on which variant it holds: attention, QK-norm, positions, FFN, the
sliding-window pattern and the attention sinks come from their registries and share one interface
each (each group's contract is documented in its base module, see ``model/registries.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.model.attention.base import AttentionContext
from gpt5_ablate.model.attention.sinks import NoSinksConfig
from gpt5_ablate.model.attention.window import AllFullConfig
from gpt5_ablate.model.ffn.base import add_aux_losses
from gpt5_ablate.model.ffn.matching import match_ffn_width
from gpt5_ablate.model.kv_cache import KVCache, LayerKVCache, cached_positions
from gpt5_ablate.model.norms import QKNormContext
from gpt5_ablate.model.registries import ATTENTION, FFN, POSITIONS, QK_NORM, SINKS, WINDOW


@dataclass
class ArchitectureConfig:
    """The typed choices the model is built from (one per config group)."""

    model: ModelConfig
    attention: Any
    norm: Any
    pos: Any
    ffn: Any
    window: Any = field(default_factory=AllFullConfig)  # absent from older configs: all_full
    sinks: Any = field(default_factory=NoSinksConfig)  # absent from older configs: none

    @classmethod
    def from_config(cls, cfg: Any) -> ArchitectureConfig:
        """From a composed Hydra config (or anything with those attributes)."""
        model = cfg.model
        if not isinstance(model, ModelConfig):
            from omegaconf import OmegaConf

            model = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), model))
        window, sinks = getattr(cfg, "window", None), getattr(cfg, "sinks", None)
        return cls(
            model=model,
            attention=ATTENTION.typed(cfg.attention),
            norm=QK_NORM.typed(cfg.norm),
            pos=POSITIONS.typed(cfg.pos),
            ffn=FFN.typed(cfg.ffn),
            window=AllFullConfig() if window is None else WINDOW.typed(window),
            sinks=NoSinksConfig() if sinks is None else SINKS.typed(sinks),
        )

    def validate(self) -> None:
        """Every size/compatibility check, run before any tensor is allocated."""
        self.model.validate()
        for group in (QK_NORM, POSITIONS, FFN, ATTENTION, WINDOW, SINKS):
            group.entry(getattr(self, group.group).name)  # unknown option -> ConfigError
        self.pos.validate(self.model)
        self.norm.validate(QKNormContext(self.model.head_dim))
        self.window.validate(self.model)
        self.sinks.validate(self.model)
        rotary = POSITIONS.get(self.pos.name).rotary
        self.attention.validate(AttentionContext(model=self.model, rotary=rotary))
        if hasattr(self.ffn, "validate"):
            self.ffn.validate(self.model)

    def factors(self) -> dict[str, str]:
        return {
            "attention": self.attention.name,
            "norm": self.norm.name,
            "pos": self.pos.name,
            "ffn": self.ffn.name,
            "window": self.window.name,
            "sinks": self.sinks.name,
            "model": self.model.name,
        }


class Block(nn.Module):
    def __init__(self, arch: ArchitectureConfig, ctx: AttentionContext) -> None:
        super().__init__()
        d_model, eps = arch.model.d_model, arch.model.norm_eps
        self.attn_norm = nn.RMSNorm(d_model, eps=eps)
        self.attn = ATTENTION.build(arch.attention, ctx)  # ctx: this layer's (its window)
        self.ffn_norm = nn.RMSNorm(d_model, eps=eps)
        self.ffn = FFN.get(arch.ffn.name)(arch.ffn, arch.model)

    def forward(self, x: torch.Tensor, cache: LayerKVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cache)
        return x + self.ffn(self.ffn_norm(x))


class GPT(nn.Module):
    def __init__(self, arch: ArchitectureConfig, vocab_size: int) -> None:
        super().__init__()
        arch.validate()
        arch = match_ffn_width(arch)  # ffn.match_non_embedding_params sets the FFN width
        self.arch, self.vocab_size = arch, vocab_size
        self._aux_metrics: dict[str, torch.Tensor] = {}
        m = arch.model
        self.token_embedding = nn.Embedding(vocab_size, m.d_model)
        self.positions = POSITIONS.build(arch.pos, m)
        ctx = AttentionContext(
            model=m,
            rotary=self.positions.rotary,
            make_qk_norm=lambda head_dim: QK_NORM.build(arch.norm, QKNormContext(head_dim)),
            make_rotary=self.positions.make_rotary,
            make_sinks=lambda: SINKS.build(arch.sinks, m),
        )
        windows = WINDOW.build(arch.window, m).layer_windows()  # per layer: size or None (full)
        self.blocks = nn.ModuleList(Block(arch, replace(ctx, window=w)) for w in windows)
        self.final_norm = nn.RMSNorm(m.d_model, eps=m.norm_eps)
        self.lm_head = nn.Linear(m.d_model, vocab_size, bias=False)
        if m.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.arch.model.init_std
        if isinstance(module, nn.Linear):
            # Residual projections are scaled by 1/sqrt(2 n_layers) so the residual stream's
            # variance does not grow with depth (GPT-2, Radford et al. 2019).
            if getattr(module, "is_residual_projection", False):
                std = std / math.sqrt(2 * self.arch.model.n_layers)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)

    # --- forward ------------------------------------------------------------------------------

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, T, vocab] and, given targets, the mean next-token cross-entropy; in
        training mode plus the FFNs' weighted auxiliary losses (MoE load balance), see
        ``aux_metrics``."""
        start_pos = kv_cache.length if kv_cache is not None else 0
        x = self.token_embedding(idx)
        pos_embedding = self.positions.input_embedding(start_pos, idx.size(1))
        if pos_embedding is not None:
            x = x + pos_embedding
        for i, block in enumerate(self.blocks):
            x = block(x, kv_cache.layers[i] if kv_cache is not None else None)
        logits = self.lm_head(self.final_norm(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
            ffns = (block.ffn for block in self.blocks)
            loss, self._aux_metrics = add_aux_losses(loss, ffns, self.training)
        return logits, loss

    def aux_metrics(self) -> dict[str, torch.Tensor]:
        """Detached scalars from the last forward given targets: e.g. ``moe/aux_loss``,
        ``moe/dropped_fraction``, ``moe/max_load`` (layer means), ``moe/lm_loss`` (the pure
        cross-entropy) and ``moe/aux_loss_weighted`` (the term added to the training loss); empty
        for dense models. See ``gpt5_ablate.model.ffn.base.add_aux_losses``."""
        return dict(self._aux_metrics)

    def new_kv_cache(self, max_len: int | None = None) -> KVCache:
        """An empty cache for up to ``max_len`` tokens (default ``model.max_seq_len``); its
        buffers are allocated on the first forward that uses it (sliding layers: ``window``)."""
        windows = [block.attn.window for block in self.blocks]
        return KVCache(windows, max_len or self.arch.model.max_seq_len)

    # --- accounting ---------------------------------------------------------------------------

    def n_params(self, non_embedding: bool = False, active: bool = False) -> int:
        """Parameter count (shared tensors counted once). ``non_embedding`` leaves out the token
        and position tables (and the head when it is tied to the embedding). ``active`` counts
        only the parameters one token uses (a mixture of experts: the router and top_k experts)."""
        total = sum(p.numel() for p in self.parameters())
        if active:
            total -= sum(b.ffn.n_params() - b.ffn.n_params(active=True) for b in self.blocks)
        if non_embedding:
            total -= self.token_embedding.weight.numel()
            total -= sum(p.numel() for p in self.positions.parameters())
        return total

    def flops_per_token(self, seq_len: int | None = None, active: bool = True) -> int:
        """Training FLOPs per token: 6 N + 3 x attention.

        ``active`` (the default): N counts the weights a token actually multiplies by, which is
        what training costs per token (a mixture of experts: router + top_k experts); False
        counts every expert, as if each saw every token. Dense models give the same either way.

        6 N: every weight of a matmul costs one multiply-add (2 FLOPs) forward and twice that
        backward, with N the weights used in matmuls (all linear layers, the lm_head included even
        when tied; embedding lookups and norms are not matmuls). The attention term is the
        q k^T and weights x v products, 2 x heads x (d_qk + d_v) x context per token forward,
        counted over the full ``seq_len`` context as in Kaplan et al. (2020) / PaLM's MFU
        accounting (no causal halving; a sliding layer counts min(window, seq_len) keys), times 3
        for forward + backward.
        """
        seq_len = seq_len or self.arch.model.max_seq_len
        ffns = [block.ffn for block in self.blocks]
        in_ffn = {id(m) for ffn in ffns for m in ffn.modules()}
        matmul_params = sum(
            m.weight.numel()
            for m in self.modules()
            if isinstance(m, nn.Linear) and id(m) not in in_ffn
        ) + sum(ffn.matmul_params_per_token(active) for ffn in ffns)
        attention = sum(block.attn.attention_flops_per_token(seq_len) for block in self.blocks)
        return 6 * matmul_params + 3 * attention

    def ffn_hidden_dim(self) -> int:
        """The FFN hidden width in use (per expert for a mixture of experts), after
        ``ffn.match_non_embedding_params`` if set: a value for the trainer to log."""
        return self.blocks[0].ffn.hidden_dim

    def kv_cache_bytes_per_token(self, dtype: torch.dtype = torch.bfloat16) -> int:
        """Bytes the KV cache holds per generated token, over all layers, while no sliding
        window is full (``kv_cache_bytes`` gives the total at a context length)."""
        element_size = torch.empty((), dtype=dtype).element_size()
        return element_size * sum(b.attn.kv_cache_elements_per_token() for b in self.blocks)

    def kv_cache_bytes(self, context_len: int, dtype: torch.dtype = torch.bfloat16) -> int:
        """Bytes the KV cache holds after ``context_len`` tokens, over all layers (a sliding
        layer keeps at most its window)."""
        element_size = torch.empty((), dtype=dtype).element_size()
        return element_size * sum(
            b.attn.kv_cache_elements_per_token() * cached_positions(b.attn.window, context_len)
            for b in self.blocks
        )

    # --- generation ---------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        eos_token_id: int | None = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` after the prompt ``idx`` [B, T], decoding with the KV cache.
        temperature 0 means greedy."""
        max_len = self.arch.model.max_seq_len
        if idx.size(1) + max_new_tokens > max_len:
            raise ValueError(
                f"prompt ({idx.size(1)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                f"model's max_seq_len={max_len}."
            )
        cache = self.new_kv_cache(idx.size(1) + max_new_tokens)
        logits, _ = self(idx, kv_cache=cache)  # prefill
        out = idx
        for _ in range(max_new_tokens):
            next_token = sample_next_token(logits[:, -1, :], temperature, top_k, top_p, generator)
            out = torch.cat((out, next_token), dim=1)
            if eos_token_id is not None and bool((next_token == eos_token_id).all()):
                break
            logits, _ = self(next_token, kv_cache=cache)
        return out


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row of ``logits`` [B, vocab]: greedy at temperature 0, else sampled after
    top-k and nucleus (top-p) filtering."""
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already cover top_p of the mass.
        drop = cumulative - sorted_logits.softmax(dim=-1) > top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def build_model(cfg: Any, vocab_size: int) -> GPT:
    return GPT(ArchitectureConfig.from_config(cfg), vocab_size)
