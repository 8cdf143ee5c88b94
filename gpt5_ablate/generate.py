"""``python -m gpt5_ablate.generate run_id=<id> prompt="..."`` (or ``checkpoint=<path>``).

Loads a checkpoint (weights, config, tokenizer) from a local path or from an MLflow run's
artifacts and samples with the KV cache.

Keys: run_id | checkpoint, prompt, max_new_tokens (100), temperature (0.8; 0 = greedy),
top_k (50; 0 = off), top_p (1.0 = off), seed (0), num_samples (1), device (auto),
tracking.uri (sqlite:///mlflow.db).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from gpt5_ablate.errors import ConfigError, InputError


@dataclass
class GenerateConfig:
    run_id: str | None = None
    checkpoint: str | None = None
    prompt: str = "def "
    max_new_tokens: int = 100
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 1.0
    seed: int = 0
    num_samples: int = 1
    device: str = "auto"
    tracking_uri: str = "sqlite:///mlflow.db"


def parse_args(argv: list[str]) -> GenerateConfig:
    cli = OmegaConf.from_dotlist([a.replace("tracking.uri=", "tracking_uri=", 1) for a in argv])
    try:
        merged = OmegaConf.merge(OmegaConf.structured(GenerateConfig), cli)
    except Exception as error:
        valid = ", ".join(GenerateConfig.__dataclass_fields__)
        # OmegaConf's message spans lines (full_key, object_type): keep the first, one line.
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"Bad generate arguments {argv}: {detail}. Valid keys: {valid}."
        ) from error
    cfg: GenerateConfig = OmegaConf.to_object(merged)
    if (cfg.run_id is None) == (cfg.checkpoint is None):
        raise ConfigError("Give exactly one of run_id=<mlflow run id> or checkpoint=<path>.")
    if cfg.max_new_tokens <= 0:
        raise ConfigError(f"max_new_tokens={cfg.max_new_tokens} must be positive.")
    return cfg


def checkpoint_from_run(run_id: str, tracking_uri: str) -> Path:
    """Download the run's ``checkpoint`` artifact dir (MLflow caches nothing: a temp dir)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from gpt5_ablate.train.tracking import check_tracking_uri

    if tracking_uri.startswith("sqlite:///"):
        # Opening a missing SQLite file would create an empty store as a side effect.
        store = Path(tracking_uri.removeprefix("sqlite:///")).expanduser()
        if not store.is_file():
            raise InputError(
                f"tracking.uri={tracking_uri!r}: there is no MLflow store at {store}, so run_id="
                f"{run_id!r} cannot be found; pass the tracking.uri the run was logged to, or "
                "checkpoint=<path> instead."
            )
    check_tracking_uri(tracking_uri)  # an unreachable server: one clear error, no retries
    try:
        MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException as error:
        raise InputError(
            f"run_id={run_id!r} does not exist in the MLflow store {tracking_uri}; list runs with "
            "`mlflow ui` or pass checkpoint=<path> instead."
        ) from error
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="checkpoint", tracking_uri=tracking_uri
        )
    except (MlflowException, OSError) as error:
        raise InputError(
            f"run {run_id} has no checkpoint artifact (was it logged with "
            "tracking.log_checkpoint=false, or did it fail before the end?). Use "
            "checkpoint=<run dir>/checkpoints instead."
        ) from error
    return Path(path)


def load_for_inference(checkpoint: Path, device: torch.device):  # -> (GPT, tokenizer, cfg)
    from transformers import PreTrainedTokenizerFast

    import gpt5_ablate.model  # noqa: F401
    from gpt5_ablate.model import build_model
    from gpt5_ablate.train import checkpoint as ckpt

    path = ckpt.resolve_checkpoint_path(checkpoint)
    cfg = OmegaConf.load(path / ckpt.CONFIG)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path / ckpt.TOKENIZER))
    model = build_model(cfg, len(tokenizer)).to(device)
    ckpt.load_weights(model, path)
    model.eval()
    return model, tokenizer, cfg


def generate_text(cfg: GenerateConfig) -> list[str]:
    from gpt5_ablate.train.runtime import resolve_runtime

    runtime = resolve_runtime(cfg.device, "fp32")
    checkpoint = (
        Path(cfg.checkpoint)
        if cfg.checkpoint
        else checkpoint_from_run(cfg.run_id, cfg.tracking_uri)
    )
    model, tokenizer, _ = load_for_inference(checkpoint, runtime.device)
    ids = tokenizer(cfg.prompt, return_tensors="pt")["input_ids"].to(runtime.device)
    if ids.size(1) == 0:
        raise ConfigError("prompt is empty after tokenization; give at least one character.")
    budget = min(cfg.max_new_tokens, model.arch.model.max_seq_len - ids.size(1))
    if budget <= 0:
        raise ConfigError(
            f"the prompt has {ids.size(1)} tokens, at or above the model's max_seq_len "
            f"{model.arch.model.max_seq_len}; shorten it."
        )
    generator = torch.Generator(device=runtime.device).manual_seed(cfg.seed)
    texts = []
    for _ in range(cfg.num_samples):
        out = model.generate(
            ids,
            budget,
            temperature=cfg.temperature,
            top_k=cfg.top_k or None,
            top_p=cfg.top_p if cfg.top_p < 1 else None,
            generator=generator,
        )
        texts.append(tokenizer.decode(out[0].tolist()))
    return texts


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(sys.argv[1:] if argv is None else argv)
        for i, text in enumerate(generate_text(cfg)):
            print(f"--- sample {i}\n{text}")
    except (ConfigError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
