"""Attention variants, and the ``window`` and ``sinks`` groups that apply to all of them.

Every module of this package is imported (``registry.discover``), so a new variant only needs
its file here (a config subclassing ``ComponentConfig`` and a module decorated with
``ATTENTION.register``, following ``AttentionLayer`` in ``base``) and
``conf/attention/<name>.yaml``."""

from gpt5_ablate.model.attention.base import AttentionContext, AttentionLayer, attend
from gpt5_ablate.registry import discover

discover(__name__)

__all__ = ["AttentionContext", "AttentionLayer", "attend"]
