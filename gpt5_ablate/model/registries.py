"""One registry per model config group: ``attention``, ``norm``, ``pos``, ``ffn``, ``window`` and
``sinks``. Each group's contract (its ``Protocol`` and its constructor context) is documented in
the group's base module: ``attention/base.py``, ``norms.py``, ``positions.py``, ``ffn/base.py``,
``attention/window.py`` and ``attention/sinks.py``."""

from __future__ import annotations

from gpt5_ablate.registry import Registry

ATTENTION: Registry = Registry("attention")
QK_NORM: Registry = Registry("norm")
POSITIONS: Registry = Registry("pos")
FFN: Registry = Registry("ffn")
WINDOW: Registry = Registry("window")
SINKS: Registry = Registry("sinks")
