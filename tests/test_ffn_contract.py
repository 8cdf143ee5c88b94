"""The ``ffn`` group's contract, for every registered option: config class, ``Component(cfg, ctx)``
construction, the ``FeedForward`` protocol and its accounting; and the dense FFNs' numerics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.model import FFN
from gpt5_ablate.model.ffn import FeedForward, FFNConfig, GeluMLPConfig, SwiGLUConfig
from gpt5_ablate.registry import ComponentConfig

MODEL = ModelConfig(name="t", n_layers=2, d_model=48, n_heads=4, max_seq_len=16)
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("name", FFN.names())
def test_every_ffn_follows_the_contract(name: str) -> None:
    cfg = FFN.entry(name).config_class()
    assert isinstance(cfg, FFNConfig) and isinstance(cfg, ComponentConfig) and cfg.name == name
    cfg.validate(MODEL)
    torch.manual_seed(0)
    ffn = FFN.build(cfg, MODEL)
    assert isinstance(ffn, FeedForward)
    assert isinstance(ffn.hidden_dim, int) and ffn.hidden_dim > 0
    x = torch.randn(2, 5, MODEL.d_model)
    y = ffn(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    total = sum(p.numel() for p in ffn.parameters())
    assert ffn.n_params() == total and 0 < ffn.n_params(active=True) <= total
    assert ffn.matmul_params_per_token(active=True) <= ffn.matmul_params_per_token(active=False)
    aux = ffn.aux_loss()
    assert aux is None or (aux.ndim == 0 and torch.isfinite(aux))
    assert all(v.ndim == 0 and not v.requires_grad for v in ffn.aux_metrics().values())


def test_swiglu_numerics_and_default_width() -> None:
    torch.manual_seed(0)
    ffn = FFN.build(SwiGLUConfig(), MODEL)
    assert ffn.hidden_dim == 128  # 8 x 48 // 3 = 128, a multiple of 32
    assert FFN.build(SwiGLUConfig(multiple_of=96), MODEL).hidden_dim == 192
    x = torch.randn(3, 4, 48)
    gate, up, down = ffn.gate_proj.weight, ffn.up_proj.weight, ffn.down_proj.weight
    expected = (F.silu(x @ gate.T) * (x @ up.T)) @ down.T
    torch.testing.assert_close(ffn(x), expected, atol=1e-6, rtol=1e-6)
    assert ffn.n_params() == ffn.matmul_params_per_token() == 3 * 48 * 128


def test_gelu_numerics_and_default_width() -> None:
    torch.manual_seed(0)
    ffn = FFN.build(GeluMLPConfig(), MODEL)
    assert ffn.hidden_dim == 4 * 48
    x = torch.randn(3, 4, 48)
    hidden = F.gelu(x @ ffn.up_proj.weight.T + ffn.up_proj.bias, approximate="tanh")
    expected = hidden @ ffn.down_proj.weight.T + ffn.down_proj.bias
    torch.testing.assert_close(ffn(x), expected, atol=1e-6, rtol=1e-6)
    assert ffn.n_params() == 2 * 48 * 192 + 192 + 48
    assert ffn.matmul_params_per_token() == 2 * 48 * 192  # biases are not matmul weights
