"""The ``ffn`` group. Every module in this package is imported (``registry.discover``), so a new
FFN only needs its file here (a config subclassing ``FFNConfig`` and a module decorated with
``FFN.register``, following ``FeedForward`` in ``base``) and ``conf/ffn/<name>.yaml``."""

from gpt5_ablate.model.ffn.base import DenseFFN, FeedForward, FFNConfig, add_aux_losses
from gpt5_ablate.model.ffn.gelu import GeluMLP, GeluMLPConfig
from gpt5_ablate.model.ffn.matching import match_ffn_width
from gpt5_ablate.model.ffn.moe import MixtureOfExperts, MoEConfig
from gpt5_ablate.model.ffn.swiglu import SwiGLU, SwiGLUConfig
from gpt5_ablate.registry import discover

discover(__name__)

__all__ = [
    "DenseFFN",
    "FFNConfig",
    "FeedForward",
    "GeluMLP",
    "GeluMLPConfig",
    "MixtureOfExperts",
    "MoEConfig",
    "SwiGLU",
    "SwiGLUConfig",
    "add_aux_losses",
    "match_ffn_width",
]
