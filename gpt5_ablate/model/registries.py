"""One registry per model config group: ``attention``, ``norm``, ``pos`` and ``ffn``."""

from __future__ import annotations

from gpt5_ablate.registry import Registry

ATTENTION: Registry = Registry("attention")
QK_NORM: Registry = Registry("norm")
POSITIONS: Registry = Registry("pos")
FFN: Registry = Registry("ffn")
