"""``python -m gpt5_ablate.bench``: training and decoding speed per arm, on synthetic tokens.

For each arm (a list of config overrides) it builds the model and optimizers exactly as training
does, runs warm-up steps, then times steps and reports the median over repeats:

- training tokens/s; step time split into forward+backward and optimizer (Muon's Newton-Schulz
  share timed on its own, on the same batched shapes);
- peak memory (CUDA max allocated; on CPU the process's max RSS);
- MFU on CUDA: flops_per_token x tokens/s / bench.peak_flops;
- decode tokens/s with the KV cache, and KV-cache bytes per token;
- optionally the data path's tokens/s, and a bare-PyTorch step of the same math (MHA, RoPE,
  SwiGLU, RMSNorm, AdamW, written plainly below) to measure the harness's overhead.

Results go to ``bench.output_dir`` as CSV and JSON with hardware and software versions.
"""

from __future__ import annotations

import json
import math
import platform
import resource
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose
from omegaconf import DictConfig
from torch import nn

from gpt5_ablate.cli import CONFIG_DIR
from gpt5_ablate.errors import ConfigError, InputError
from gpt5_ablate.optim.muon import Muon


def timed(fn: Callable[[], Any], sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_arm(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """Time the Trainer's own step (its phase timer syncs the device around each phase)."""
    from gpt5_ablate.train.plan import make_plan
    from gpt5_ablate.train.trainer import Trainer

    plan = make_plan(cfg)
    plan.trainer.progress = False
    bench = cfg.bench
    trainer = Trainer(plan, Path(bench.output_dir))
    runtime = trainer.runtime
    if runtime.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runtime.device)
    rng = np.random.default_rng(cfg.seed)
    blocks = rng.integers(0, bench.vocab_size, size=(512, plan.seq_len + 1), dtype=np.int64)
    trainer.build(bench.vocab_size, blocks)
    phase_s, warmup_s = time_steps(trainer, bench)
    fb_s, opt_s = phase_s["forward_backward"], phase_s["optimizer"]
    step_s = fb_s + opt_s
    tokens_per_s = plan.tokens_per_step / step_s
    model = trainer.model
    flops_per_token = model.flops_per_token(plan.seq_len)
    ns_s = time_newton_schulz(trainer.optimizers, runtime.device, runtime.synchronize)
    new_tokens = min(bench.decode_tokens, plan.arch.model.max_seq_len - bench.decode_prompt)
    prompt = torch.as_tensor(blocks[:1, : bench.decode_prompt], device=runtime.device)
    decode_s = time_decoding(model, prompt, new_tokens, runtime)
    row: dict[str, Any] = {
        "arm": " ".join(overrides),
        **plan.factors(),
        "device": str(runtime.device),
        "precision": runtime.precision,
        "compile": trainer.compiled,
        "warmup_s": round(warmup_s, 2),  # compilation included when compiled
        "n_params": model.n_params(),
        "n_params_active": model.n_params(active=True),
        "tokens_per_step": plan.tokens_per_step,
        "tokens_per_s": round(tokens_per_s, 1),
        "step_ms": round(1000 * step_s, 2),
        "fwd_bwd_ms": round(1000 * fb_s, 2),
        "optimizer_ms": round(1000 * opt_s, 2),
        "optimizer_share": round(opt_s / step_s, 4),
        "newton_schulz_ms": round(1000 * ns_s, 2),
        "newton_schulz_share": round(ns_s / step_s, 4),
        "peak_memory_mb": round(peak_memory_mb(runtime.device), 1),
        "flops_per_token": flops_per_token,
        "mfu": round(flops_per_token * tokens_per_s / bench.peak_flops, 4)
        if runtime.device.type == "cuda"
        else None,
        "decode_tokens_per_s": round(new_tokens / decode_s, 1),
        "kv_cache_bytes_per_token_bf16": model.kv_cache_bytes_per_token(torch.bfloat16),
        "kv_cache_mb_at_max_seq_len_bf16": round(
            model.kv_cache_bytes(plan.arch.model.max_seq_len, torch.bfloat16) / 2**20, 3
        ),
    }
    for name, seconds in phase_s.items():
        if name.startswith("step/"):  # one optimizer's own step, e.g. step/Muon
            row[f"{name.removeprefix('step/').lower()}_step_ms"] = round(1000 * seconds, 2)
            row[f"{name.removeprefix('step/').lower()}_share"] = round(seconds / step_s, 4)
    return row


def time_steps(trainer: Any, bench: Any) -> tuple[dict[str, float], float]:
    """Median seconds per phase of ``trainer.train_step`` over repeats, and the warm-up time."""
    from gpt5_ablate.train.steps import PhaseTimer

    sync = trainer.runtime.synchronize
    trainer.timer = timer = PhaseTimer(sync)
    started = time.perf_counter()
    for _ in range(bench.warmup_steps):
        trainer.train_step()
    sync()
    warmup_s = time.perf_counter() - started
    medians: dict[str, list[float]] = defaultdict(list)
    for _ in range(bench.repeats):
        timer.reset()
        for _ in range(bench.timed_steps):
            trainer.train_step()
        for name, seconds in timer.seconds.items():
            medians[name].append(statistics.median(seconds))
    return {name: statistics.median(values) for name, values in medians.items()}, warmup_s


def time_newton_schulz(
    optimizers: list[torch.optim.Optimizer], device: torch.device, sync: Callable[[], None]
) -> float:
    """Newton-Schulz alone on the shapes Muon batches (projection blocks and experts included),
    after one warm-up call so a compiled Newton-Schulz is timed compiled; 0 without Muon."""
    muon = [opt for opt in optimizers if isinstance(opt, Muon)]
    if not muon:
        return 0.0
    steps = muon[0].param_groups[0]["ns_steps"]
    stacks = [torch.randn(n, *shape, device=device) for shape, n in muon[0].matrix_shapes().items()]
    for stack in stacks:
        muon[0].orthogonalize(stack, steps=steps)
    return statistics.median(
        timed(lambda: [muon[0].orthogonalize(s, steps=steps) for s in stacks], sync)
        for _ in range(5)
    )


def time_decoding(model: Any, prompt: torch.Tensor, new_tokens: int, runtime: Any) -> float:
    """Seconds to decode ``new_tokens`` greedily with the KV cache, batch 1 (median of 3)."""
    model.eval()
    with runtime.autocast():
        model.generate(prompt, 4, temperature=0)  # warm-up
        return statistics.median(
            timed(lambda: model.generate(prompt, new_tokens, temperature=0), runtime.synchronize)
            for _ in range(3)
        )


# --- a bare PyTorch step of the same math, for the overhead ratio --------------------------------


class BareBlock(nn.Module):
    def __init__(
        self, d: int, heads: int, hidden: int, seq_len: int, theta: float = 10000.0
    ) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.RMSNorm(d, eps=1e-6), nn.RMSNorm(d, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.gate, self.up = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False)
        self.down = nn.Linear(hidden, d, bias=False)
        hd = d // heads
        freqs = torch.outer(
            torch.arange(seq_len).float(), theta ** (-torch.arange(0, hd, 2).float() / hd)
        )
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)

    def rope(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        cos, sin = self.cos[: x.size(-2)], self.sin[: x.size(-2)]
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (
            self.qkv(self.norm1(x))
            .view(b, t, 3, self.heads, d // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        y = F.scaled_dot_product_attention(self.rope(q), self.rope(k), v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(b, t, d))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def bench_bare(cfg: DictConfig) -> dict[str, Any]:
    """Plain loop, same math as attention=mha norm=none pos=rope ffn=swiglu optimizer=adamw."""
    from gpt5_ablate.train.plan import make_plan
    from gpt5_ablate.train.runtime import resolve_runtime
    from gpt5_ablate.train.steps import use_compile

    plan = make_plan(cfg)
    m, trainer = plan.arch.model, plan.trainer
    runtime = resolve_runtime(trainer.device, trainer.precision, trainer.num_threads)
    hidden = -(-(8 * m.d_model // 3) // 32) * 32
    torch.manual_seed(cfg.seed)
    embed = nn.Embedding(cfg.bench.vocab_size, m.d_model)
    blocks = nn.ModuleList(
        BareBlock(m.d_model, m.n_heads, hidden, m.max_seq_len) for _ in range(m.n_layers)
    )
    final = nn.RMSNorm(m.d_model, eps=1e-6)
    model = nn.ModuleList([embed, blocks, final]).to(runtime.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=runtime.device.type == "cuda")
    tokens = torch.randint(
        0, cfg.bench.vocab_size, (trainer.micro_batch_size, plan.seq_len + 1), device=runtime.device
    )

    def forward(batch: torch.Tensor) -> torch.Tensor:
        # The whole forward under the same autocast as the harness (bf16 on CUDA).
        with runtime.autocast():
            x = embed(batch[:, :-1])
            for block in blocks:
                x = block(x)
            logits = F.linear(final(x), embed.weight)
        return F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())

    # Compiled when the harness is (trainer.compile), so the comparison is like for like.
    loss_of = torch.compile(forward) if use_compile(trainer.compile, runtime.device) else forward

    def step() -> None:
        loss = loss_of(tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(cfg.bench.warmup_steps):
        step()
    medians = [
        statistics.median(timed(step, runtime.synchronize) for _ in range(cfg.bench.timed_steps))
        for _ in range(cfg.bench.repeats)
    ]
    return {
        "arm": "bare PyTorch (mha, no qk-norm, rope, swiglu, adamw)",
        "step_ms": round(1000 * statistics.median(medians), 2),
    }


def bench_data_loader(cfg: DictConfig, seq_len: int, batch: int) -> float:
    from gpt5_ablate.data import BlockLoader

    blocks = np.random.default_rng(0).integers(0, 8192, size=(20000, seq_len + 1)).astype(np.uint16)
    loader = BlockLoader(blocks, batch_size=batch, seed=0, device=torch.device("cpu"))
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        loader.next_batch()
    return n * batch * seq_len / (time.perf_counter() - start)


def environment() -> dict[str, Any]:
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


OVERHEAD_WARMUP_STEPS = 12
TABLE_COLUMNS = [
    "arm",
    "tokens_per_s",
    "step_ms",
    "fwd_bwd_ms",
    "optimizer_ms",
    "newton_schulz_ms",
    "muon_step_ms",
    "peak_memory_mb",
    "mfu",
    "decode_tokens_per_s",
    "kv_cache_bytes_per_token_bf16",
    "kv_cache_mb_at_max_seq_len_bf16",
]


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="bench")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    base_overrides = list(HydraConfig.get().overrides.task)
    rows = []
    try:
        for arm in cfg.bench.arms:
            arm_cfg = compose("bench", overrides=[*base_overrides, *arm])
            rows.append(bench_arm(arm_cfg, list(arm)))
            print(f"{rows[-1]['arm']}: {rows[-1]['tokens_per_s']:,.0f} tokens/s", file=sys.stderr)
        extra: dict[str, Any] = {"environment": environment()}
        if cfg.bench.bare_baseline:
            same_math = ["attention=mha", "norm=none", "pos=rope", "ffn=swiglu", "optimizer=adamw"]
            # Both loops warm up for at least OVERHEAD_WARMUP_STEPS: on CPU the plain loop's
            # first steps run up to 4x slower (memory allocation settling), which a short
            # warm-up (+bench=ci) would report as harness "speed".
            warmup = max(cfg.bench.warmup_steps, OVERHEAD_WARMUP_STEPS)
            arm_cfg = compose(
                "bench",
                overrides=[
                    *base_overrides,
                    *same_math,
                    "trainer.grad_clip=1.0",
                    f"bench.warmup_steps={warmup}",
                ],
            )
            harness = bench_arm(arm_cfg, same_math)
            bare = bench_bare(arm_cfg)
            extra["overhead"] = {
                "harness_step_ms": harness["step_ms"],
                "bare_step_ms": bare["step_ms"],
                "ratio": round(harness["step_ms"] / bare["step_ms"], 3),
            }
        if cfg.bench.data_loader:
            seq_len = cfg.trainer.seq_len or cfg.model.max_seq_len
            extra["data_loader_tokens_per_s"] = round(
                bench_data_loader(cfg, seq_len, cfg.trainer.micro_batch_size)
            )
    except (ConfigError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

    out = Path(cfg.bench.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    import pandas as pd

    pd.DataFrame(rows).to_csv(out / f"bench-{stamp}.csv", index=False)
    (out / f"bench-{stamp}.json").write_text(json.dumps({"rows": rows, **extra}, indent=2))
    print(format_table(rows, TABLE_COLUMNS))
    if "overhead" in extra:
        o = extra["overhead"]
        print(
            f"\nHarness vs bare PyTorch step: {o['harness_step_ms']} ms vs {o['bare_step_ms']} ms (ratio {o['ratio']})"
        )
    if "data_loader_tokens_per_s" in extra:
        best = max(r["tokens_per_s"] for r in rows) if rows else math.nan
        dl = extra["data_loader_tokens_per_s"]
        print(f"Data loader: {dl:,} tokens/s ({dl / best:.0f}x the fastest arm's training rate)")
    print(
        f"Environment: {json.dumps(extra['environment'])}\nSaved to {out}/bench-{stamp}.{{csv,json}}"
    )
    if cfg.bench.log_mlflow:
        import mlflow

        mlflow.set_tracking_uri(cfg.tracking.uri)
        mlflow.set_experiment(f"{cfg.tracking.experiment}-bench")
        for row in rows:
            with mlflow.start_run(run_name=f"bench {row['arm']}"):
                mlflow.log_params({k: v for k, v in row.items() if isinstance(v, str)})
                mlflow.log_metrics(
                    {
                        k: float(v)
                        for k, v in row.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)
                    }
                )
                mlflow.log_dict(extra["environment"], "environment.json")


if __name__ == "__main__":
    main()
