"""Top-level structured config and the checks that run before anything is allocated.

Component groups (attention, norm, pos, ffn, optimizer, data, tokenizer) are typed by the
dataclasses their registries store under ``schema/<group>/<name>``; this module types the rest:
the model size preset, the trainer and the tracking settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from gpt5_ablate.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
NONFINITE_POLICIES = ("stop", "skip")
PARALLEL_MODES = ("auto", "none", "ddp", "fsdp")
COMPILE_MODES = ("auto", "true", "false")


@dataclass
class ModelConfig:
    """Size preset. Variant-specific sizes (KV heads, MLA ranks) live in their own groups."""

    name: str = "tiny"
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    max_seq_len: int = 128
    tie_embeddings: bool = True
    init_std: float = 0.02
    norm_eps: float = 1e-6
    # Per-preset default learning rates, read by conf/optimizer/*.yaml: the best rates measured
    # at this size where a bracket exists (the preset's YAML says where), else the usual ones.
    default_lr: dict[str, float] = field(
        default_factory=lambda: {"adamw": 3e-3, "muon": 0.02, "muon_adamw_side": 3e-3}
    )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def validate(self) -> None:
        for key in ("n_layers", "d_model", "n_heads", "max_seq_len"):
            value = getattr(self, key)
            if value <= 0:
                raise ConfigError(f"model.{key}={value} is invalid: it must be a positive integer.")
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}; "
                f"choose n_heads among the divisors of d_model "
                f"({', '.join(str(d) for d in _divisors(self.d_model) if d <= 64)}...)."
            )
        if self.init_std <= 0:
            raise ConfigError(f"model.init_std={self.init_std} must be > 0.")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass
class TrainerConfig:
    max_steps: int = 200
    # A token budget overrides max_steps when set: steps = ceil(max_tokens / tokens_per_step).
    max_tokens: int | None = None
    # Or a budget proportional to the model: tokens = tokens_per_param x non-embedding
    # parameters (Chinchilla-optimal is about 20); overrides max_tokens and max_steps.
    tokens_per_param: float | None = None
    seq_len: int | None = None  # None: model.max_seq_len
    micro_batch_size: int = 8
    grad_accum_steps: int = 1
    precision: str = "auto"  # auto: bf16 on CUDA, fp32 elsewhere
    # auto: torch.compile on CUDA (where it pays), eager elsewhere; true/false force it.
    compile: str = "auto"
    device: str = "auto"
    num_threads: int | None = None  # CPU threads for torch (None: torch's default)
    # Under torchrun: auto = ddp when WORLD_SIZE > 1, else none; fsdp = FSDP2 (fully_shard).
    parallel: str = "auto"
    grad_clip: float = 1.0
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1  # cosine floor, as a fraction of each group's peak LR
    eval_every: int = 50
    eval_tokens: int = 16384  # size of the fixed held-out token set
    eval_batch_size: int = 32
    log_every: int = 10
    checkpoint_every: int = 100  # 0: only the final checkpoint
    keep_checkpoints: int = 2
    resume: bool = True  # re-running the same command in the same run dir resumes
    on_nonfinite: str = "stop"  # stop | skip
    num_samples: int = 3  # generated samples logged at the end
    sample_tokens: int = 64
    progress: bool = True
    # Checkpoints written before the pickle-free format hold a pickled trainer state; resuming
    # one executes whatever it contains, so it needs this explicit opt-in.
    trust_checkpoint: bool = False

    def validate(self, model: ModelConfig) -> None:
        positive = ("micro_batch_size", "grad_accum_steps", "eval_every", "log_every")
        for key in positive:
            value = getattr(self, key)
            if value <= 0:
                raise ConfigError(f"trainer.{key}={value} is invalid: it must be >= 1.")
        if self.max_tokens is None and self.max_steps <= 0:
            raise ConfigError(
                f"trainer.max_steps={self.max_steps} is invalid: give a positive step budget "
                "or a token budget with trainer.max_tokens."
            )
        if self.tokens_per_param is not None and self.tokens_per_param <= 0:
            raise ConfigError(
                f"trainer.tokens_per_param={self.tokens_per_param} must be positive (or null)."
            )
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ConfigError(f"trainer.max_tokens={self.max_tokens} must be positive (or null).")
        for key in ("warmup_steps", "checkpoint_every", "eval_tokens", "num_samples"):
            if getattr(self, key) < 0:
                raise ConfigError(f"trainer.{key}={getattr(self, key)} must be >= 0.")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"trainer.min_lr_ratio={self.min_lr_ratio} must be within [0, 1].")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"trainer.precision={self.precision!r} is invalid. Valid choices: {', '.join(PRECISIONS)}."
            )
        if self.device not in DEVICES:
            raise ConfigError(
                f"trainer.device={self.device!r} is invalid. Valid choices: {', '.join(DEVICES)}."
            )
        if self.on_nonfinite not in NONFINITE_POLICIES:
            raise ConfigError(
                f"trainer.on_nonfinite={self.on_nonfinite!r} is invalid. "
                f"Valid choices: {', '.join(NONFINITE_POLICIES)}."
            )
        if self.seq_len is not None:
            if self.seq_len <= 0:
                raise ConfigError(f"trainer.seq_len={self.seq_len} must be positive.")
            if self.seq_len > model.max_seq_len:
                raise ConfigError(
                    f"trainer.seq_len={self.seq_len} exceeds model.max_seq_len={model.max_seq_len} "
                    "(the number of positions the model supports); lower trainer.seq_len or raise "
                    "model.max_seq_len."
                )
        if self.parallel not in PARALLEL_MODES:
            raise ConfigError(
                f"trainer.parallel={self.parallel!r} is invalid. Valid choices: {', '.join(PARALLEL_MODES)}."
            )
        if self.num_threads is not None and self.num_threads <= 0:
            raise ConfigError(f"trainer.num_threads={self.num_threads} must be >= 1 (or null).")
        if str(self.compile).lower() not in COMPILE_MODES:
            raise ConfigError(
                f"trainer.compile={self.compile!r} is invalid. Valid choices: auto, true, false."
            )
        if self.grad_clip < 0:
            raise ConfigError(f"trainer.grad_clip={self.grad_clip} must be >= 0 (0 disables it).")

    def resolved_seq_len(self, model: ModelConfig) -> int:
        return self.seq_len if self.seq_len is not None else model.max_seq_len


@dataclass
class TrackingConfig:
    # The default store is a SQLite file in the working directory; `mlflow ui` opens it.
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "gpt5_ablate"
    enabled: bool = True
    run_name: str | None = None
    log_checkpoint: bool = True  # upload the final checkpoint as an artifact
    flush_every: int = 50  # buffered metric values sent per batch


@dataclass
class BenchConfig:
    """Settings of ``python -m gpt5_ablate.bench`` (see conf/bench.yaml)."""

    arms: list[list[str]] = field(default_factory=list)
    vocab_size: int = 8192
    warmup_steps: int = 3
    timed_steps: int = 10
    repeats: int = 3
    decode_tokens: int = 64
    decode_prompt: int = 16
    peak_flops: float = 989.0e12  # H100 SXM dense bf16
    bare_baseline: bool = True
    data_loader: bool = True
    output_dir: str = "bench_results"
    log_mlflow: bool = False


@dataclass
class Config:
    attention: Any = MISSING
    norm: Any = MISSING
    pos: Any = MISSING
    ffn: Any = MISSING
    window: Any = MISSING
    sinks: Any = MISSING
    model: ModelConfig = MISSING
    optimizer: Any = MISSING
    data: Any = MISSING
    tokenizer: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 0
    cache_dir: str = "~/.cache/gpt5_ablate"
    # Set by a named experiment (``+experiment=...``); tagged on every run.
    experiment_name: str | None = None
    # Protocol phase, tagged on every run: ``select`` (LR selection seeds) or ``report`` (fresh
    # seeds the analysis reports on); the analysis never mixes the two.
    phase: str = "report"
    bench: BenchConfig | None = None  # only used by gpt5_ablate.bench


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config container as ``{"trainer.max_steps": 200, ...}`` (MLflow params, resume
    comparisons)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def rank_log_suffix() -> str:
    """``_rank<N>`` under a multi-process launch, else empty: the ranks of a torchrun run share
    one run dir, so each needs its own Hydra log file (``cli_rank0.log``, ``cli_rank1.log``)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ""
    return f"_rank{os.environ.get('RANK', '0')}"


def register_configs() -> None:
    """Store the top-level schema; component schemas are stored by their registries."""
    if not OmegaConf.has_resolver("gpt5_ablate_rank_suffix"):
        OmegaConf.register_new_resolver("gpt5_ablate_rank_suffix", rank_log_suffix)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="schema/model", name="base", node=ModelConfig)
    cs.store(group="schema/trainer", name="base", node=TrainerConfig)
    cs.store(group="schema/tracking", name="base", node=TrackingConfig)
