"""The two registries of the data pipeline, and the context their configs are validated in.

- ``DATA`` (``data=...``): corpus classes, built as ``Corpus(cfg, ctx)``.
- ``TOKENIZER`` (``tokenizer=...``): tokenizer builders, built as ``Builder(cfg, ctx)``.

``ctx`` may be None for both; a ``DataContext`` lets a corpus check the choices it depends on
(``data=token_files`` holds token ids, so it needs a pretrained tokenizer, not a trained one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpt5_ablate.registry import Registry

DATA: Registry[Any] = Registry("data")
TOKENIZER: Registry[Any] = Registry("tokenizer")


@dataclass
class DataContext:
    """What the data and tokenizer checks may know about the rest of the run's config."""

    tokenizer: Any = None  # the typed tokenizer config (BPEConfig, HubTokenizerConfig...), if known
