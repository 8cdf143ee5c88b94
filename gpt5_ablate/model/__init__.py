"""Model components. Importing this package registers every variant with its config group."""

from gpt5_ablate.model import attention, ffn, norms, positions  # noqa: F401  (registration)
from gpt5_ablate.model.gpt import GPT, ArchitectureConfig, build_model, sample_next_token
from gpt5_ablate.model.kv_cache import KVCache
from gpt5_ablate.model.registries import ATTENTION, FFN, POSITIONS, QK_NORM, SINKS, WINDOW

__all__ = [
    "ATTENTION",
    "FFN",
    "GPT",
    "POSITIONS",
    "QK_NORM",
    "SINKS",
    "WINDOW",
    "ArchitectureConfig",
    "KVCache",
    "build_model",
    "sample_next_token",
]
