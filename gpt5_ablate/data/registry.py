"""The two registries of the data pipeline: corpora (``data=...``) and tokenizers (``tokenizer=...``)."""

from __future__ import annotations

from typing import Any

from gpt5_ablate.registry import Registry

# Values are the component classes; each is constructed with its typed config dataclass.
DATA: Registry[Any] = Registry("data")
TOKENIZER: Registry[Any] = Registry("tokenizer")
