"""``python -m gpt5_ablate.generate run_id=<id> prompt="..."`` (or ``checkpoint=<path>``).

Loads a checkpoint (weights, config, tokenizer) from a local path or from an MLflow run's
artifacts and samples with the KV cache.

The prompt is taken exactly as the shell passes it (colons, quotes, trailing spaces and newlines
included); ``prompt_file=`` reads a long one from a file. Only safetensors weights are read: a
checkpoint or artifact holding pickle files (``.pt``, ``.bin``...) is refused.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from gpt5_ablate.cli_args import parse_key_values, run_tool
from gpt5_ablate.errors import ConfigError, InputError
from gpt5_ablate.train.untrusted import refuse_pickle_files


@dataclass
class GenerateConfig:
    run_id: str | None = field(default=None, metadata={"help": "MLflow run to load"})
    checkpoint: str | None = field(
        default=None, metadata={"help": "a checkpoint dir, run dir or its checkpoints/ dir"}
    )
    prompt: str = field(default="def ", metadata={"help": "taken exactly as given"})
    prompt_file: str | None = field(
        default=None, metadata={"help": "read the prompt from this file instead"}
    )
    max_new_tokens: int = 100
    temperature: float = field(default=0.8, metadata={"help": "0 = greedy"})
    top_k: int = field(default=50, metadata={"help": "0 = off"})
    top_p: float = field(default=1.0, metadata={"help": "1.0 = off"})
    seed: int = 0
    num_samples: int = 1
    device: str = "auto"
    tracking_uri: str = "sqlite:///mlflow.db"


def parse_args(argv: list[str]) -> GenerateConfig:
    cfg = parse_key_values(GenerateConfig, argv, "python -m gpt5_ablate.generate", __doc__ or "")
    if (cfg.run_id is None) == (cfg.checkpoint is None):
        raise ConfigError("Give exactly one of run_id=<mlflow run id> or checkpoint=<path>.")
    if cfg.max_new_tokens <= 0:
        raise ConfigError(f"max_new_tokens={cfg.max_new_tokens} must be positive.")
    if cfg.num_samples <= 0:
        raise ConfigError(f"num_samples={cfg.num_samples} must be positive.")
    if cfg.prompt_file is not None:
        path = Path(cfg.prompt_file).expanduser()
        try:
            cfg.prompt = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"prompt_file={cfg.prompt_file!r} cannot be read: {error}.") from None
    return cfg


def checkpoint_from_run(run_id: str, tracking_uri: str) -> Path:
    """Download the run's ``checkpoint`` artifact dir (MLflow caches nothing: a temp dir)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from gpt5_ablate.train.tracking import check_tracking_uri, sqlite_file

    store = sqlite_file(tracking_uri)  # opening a missing file would create an empty store
    if store is not None and not store.is_file():
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
        refuse_pickle_files(Path(path), ignore=("trainer_state.pt",))
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
    refuse_pickle_files(path, ignore=("trainer_state.pt",))  # generate never reads it
    cfg = OmegaConf.load(path / ckpt.CONFIG)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path / ckpt.TOKENIZER))
    model = build_model(cfg, len(tokenizer)).to(device)
    ckpt.load_weights(model, path)
    model.eval()
    return model, tokenizer, cfg


def generate_text(cfg: GenerateConfig) -> list[str]:
    from gpt5_ablate.train.runtime import resolve_runtime
    from gpt5_ablate.train.samples import sample_texts

    runtime = resolve_runtime(cfg.device, "fp32")
    checkpoint = (
        Path(cfg.checkpoint)
        if cfg.checkpoint
        else checkpoint_from_run(str(cfg.run_id), cfg.tracking_uri)
    )
    model, tokenizer, _ = load_for_inference(checkpoint, runtime.device)
    return sample_texts(
        model,
        tokenizer,
        [cfg.prompt] * cfg.num_samples,
        cfg.max_new_tokens,
        cfg.seed,
        temperature=cfg.temperature,
        top_k=cfg.top_k or None,
        top_p=cfg.top_p if cfg.top_p < 1 else None,
    )


def _main(argv: list[str]) -> int:
    cfg = parse_args(argv)
    for i, text in enumerate(generate_text(cfg)):
        print(f"--- sample {i}\n{text}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_tool(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
