"""Optimizers: Newton–Schulz, Muon's update rule, the parameter split, the builders, the LR schedule
and an overfitting check for every model combination with each optimizer."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model import GPT
from gpt5_ablate.optim import (
    OPTIMIZER,
    AdamWConfig,
    Muon,
    MuonAdamWConfig,
    build_adamw,
    build_muon_adamw,
    collect_param_hints,
    lr_multiplier,
    newton_schulz_orthogonalize,
    restore_param_hints,
    split_parameters,
)
from gpt5_ablate.registry import ComponentConfig

MakeGPT = Callable[..., GPT]
pytestmark = pytest.mark.usefixtures("single_thread")


def _gaussian(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _singular_values(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(x.double())


# --- Newton–Schulz ------------------------------------------------------------------------------

# The iteration runs in bf16 on GPUs and in fp32 on CPUs (Muon's ns_dtype="auto"); both must hold.
NS_DTYPES = pytest.mark.parametrize(
    "ns_dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"]
)


@NS_DTYPES
@pytest.mark.parametrize(
    "shape",
    [(256, 64), (512, 128), (64, 256), (3, 256, 64), (3, 64, 256)],
    ids=["tall_256x64", "tall_512x128", "wide_64x256", "batch3_tall", "batch3_wide"],
)
def test_newton_schulz_singular_values_near_one(
    shape: tuple[int, ...], ns_dtype: torch.dtype
) -> None:
    for seed in range(3):
        x = _gaussian(*shape, seed=seed)
        sv = _singular_values(newton_schulz_orthogonalize(x, dtype=ns_dtype))
        assert sv.min() >= 0.5 and sv.max() <= 1.5, (sv.min().item(), sv.max().item())


@NS_DTYPES
def test_newton_schulz_batched_equals_one_by_one(ns_dtype: torch.dtype) -> None:
    x = _gaussian(3, 128, 32, seed=1)
    batched = newton_schulz_orthogonalize(x, dtype=ns_dtype)
    for i in range(3):
        single = newton_schulz_orthogonalize(x[i], dtype=ns_dtype)
        torch.testing.assert_close(batched[i], single, atol=1e-2, rtol=0)


def _controlled_spectrum(n: int, low: float, seed: int) -> torch.Tensor:
    """Q1 diag(s) Q2^T with random orthogonal Q1, Q2 and s log-uniform in [low, 1]."""
    gen = torch.Generator().manual_seed(seed)
    q1, _ = torch.linalg.qr(torch.randn(n, n, generator=gen))
    q2, _ = torch.linalg.qr(torch.randn(n, n, generator=gen))
    s = torch.empty(n).uniform_(math.log(low), 0.0, generator=gen).exp()
    return q1 @ torch.diag(s) @ q2.T


@NS_DTYPES
@pytest.mark.parametrize("n", [32, 64, 128])
def test_newton_schulz_square_with_controlled_spectrum(n: int, ns_dtype: torch.dtype) -> None:
    """Singular values spread over [0.05, 1] all land in [0.5, 1.5] (measured: [0.67, 1.15];
    the same holds down to a spread of [0.02, 1])."""
    for seed in range(3):
        x = _controlled_spectrum(n, 0.05, seed)
        sv = _singular_values(newton_schulz_orthogonalize(x, dtype=ns_dtype))
        assert sv.min() >= 0.5 and sv.max() <= 1.5, (sv.min().item(), sv.max().item())


@NS_DTYPES
def test_newton_schulz_square_gaussian_limitation(ns_dtype: torch.dtype) -> None:
    """Known limit of 5 quintic steps from a Frobenius-normalised start: singular values below
    about 1/400 of the Frobenius norm are not lifted to ~1, and a square Gaussian matrix has
    singular values near zero (a 128x128 one can come out with a minimum of ~0.02). Muon accepts
    this: those directions barely move. What must hold: every direction whose singular value is
    at least 1% of the largest ends up in [0.5, 1.5].

    NS is an odd matrix polynomial, so it keeps the singular vectors of its input; the output's
    value for input direction i is u_i^T O v_i.
    """
    for seed in range(3):
        x = _gaussian(128, 128, seed=seed).double()
        u, s, vh = torch.linalg.svd(x)
        out = newton_schulz_orthogonalize(x, dtype=ns_dtype)
        mapped = torch.diagonal(u.T @ out @ vh.T)
        kept = s >= 0.01 * s.max()
        assert kept.sum() >= 120  # only a handful of directions are below 1%
        assert mapped[kept].min() >= 0.5 and mapped[kept].max() <= 1.5


@NS_DTYPES
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str
)
def test_newton_schulz_keeps_dtype_and_shape(dtype: torch.dtype, ns_dtype: torch.dtype) -> None:
    x = _gaussian(2, 48, 16, seed=2).to(dtype)
    out = newton_schulz_orthogonalize(x, dtype=ns_dtype)
    assert out.dtype == dtype and out.shape == x.shape


@NS_DTYPES
def test_newton_schulz_transpose_equivariant_and_close_to_polar(ns_dtype: torch.dtype) -> None:
    tall = _gaussian(256, 64, seed=3)
    out = newton_schulz_orthogonalize(tall, dtype=ns_dtype)
    transposed = newton_schulz_orthogonalize(tall.T, dtype=ns_dtype)
    torch.testing.assert_close(transposed, out.T, atol=1e-2, rtol=0)
    # It approximates the polar factor U V^T (not merely some orthogonal-ish matrix).
    u, _, vh = torch.linalg.svd(tall.double(), full_matrices=False)
    polar = u @ vh
    assert torch.linalg.norm(out.double() - polar) / torch.linalg.norm(polar) < 0.3


# --- Muon's update rule -------------------------------------------------------------------------

# Muon's ns_dtype option and the NS iteration dtype it stands for.
MUON_NS = pytest.mark.parametrize(
    ("ns_option", "ns_dtype"),
    [("fp32", torch.float32), ("bf16", torch.bfloat16), ("auto", torch.float32)],  # auto: CPU
    ids=["fp32", "bf16", "auto_cpu"],
)


def _muon_param(rows: int, cols: int, seed: int = 0) -> nn.Parameter:
    return nn.Parameter(_gaussian(rows, cols, seed=seed))


@MUON_NS
@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5)], ids=["tall", "wide", "square"])
def test_muon_step_without_momentum(
    shape: tuple[int, int], ns_option: str, ns_dtype: torch.dtype
) -> None:
    rows, cols = shape
    p = _muon_param(rows, cols)
    start = p.detach().clone()
    grad = _gaussian(rows, cols, seed=1)
    lr = 0.1
    opt = Muon([p], lr=lr, momentum=0.0, nesterov=True, ns_dtype=ns_option)
    p.grad = grad.clone()
    opt.step()
    scale = math.sqrt(max(1.0, rows / cols))
    expected = start - lr * scale * newton_schulz_orthogonalize(grad, dtype=ns_dtype)
    torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=0)


@MUON_NS
@pytest.mark.parametrize("nesterov", [True, False], ids=["nesterov", "heavy_ball"])
def test_muon_momentum_two_steps(nesterov: bool, ns_option: str, ns_dtype: torch.dtype) -> None:
    p = _muon_param(8, 4)
    w0 = p.detach().clone()
    g1, g2 = _gaussian(8, 4, seed=1), _gaussian(8, 4, seed=2)
    lr, mu, scale = 0.05, 0.9, math.sqrt(2.0)
    opt = Muon([p], lr=lr, momentum=mu, nesterov=nesterov, ns_dtype=ns_option)
    for g in (g1, g2):
        p.grad = g.clone()
        opt.step()
    # Buffers: B1 = g1, B2 = mu g1 + g2. Updates: Nesterov g + mu B, otherwise B.
    b1, b2 = g1, mu * g1 + g2
    u1, u2 = (g1 + mu * b1, g2 + mu * b2) if nesterov else (b1, b2)
    w1 = w0 - lr * scale * newton_schulz_orthogonalize(u1, dtype=ns_dtype)
    w2 = w1 - lr * scale * newton_schulz_orthogonalize(u2, dtype=ns_dtype)
    torch.testing.assert_close(p.detach(), w2, atol=1e-6, rtol=0)


def test_muon_weight_decay_shrinks_weights() -> None:
    lr, wd = 0.1, 0.5
    p = _muon_param(4, 4)
    w0 = p.detach().clone()
    opt = Muon([p], lr=lr, momentum=0.95, weight_decay=wd)
    p.grad = torch.zeros_like(p)  # orthogonalising zero gives zero: only the decay acts
    opt.step()
    torch.testing.assert_close(p.detach(), w0 * (1 - lr * wd), atol=1e-7, rtol=0)

    q = _muon_param(6, 3, seed=4)
    q0, grad = q.detach().clone(), _gaussian(6, 3, seed=5)
    opt = Muon([q], lr=lr, momentum=0.0, weight_decay=wd, ns_dtype="fp32")
    q.grad = grad
    opt.step()
    ortho = newton_schulz_orthogonalize(grad, dtype=torch.float32)
    expected = q0 * (1 - lr * wd) - lr * math.sqrt(2.0) * ortho
    torch.testing.assert_close(q.detach(), expected, atol=1e-6, rtol=0)


def test_muon_batches_same_shape_matrices_independently() -> None:
    a, b, c = _muon_param(8, 4, seed=0), _muon_param(8, 4, seed=1), _muon_param(3, 5, seed=2)
    start = [p.detach().clone() for p in (a, b, c)]
    grads = [_gaussian(*p.shape, seed=10 + i) for i, p in enumerate((a, b, c))]
    opt = Muon([a, b, c], lr=0.1, momentum=0.0, ns_dtype="fp32")
    for p, g in zip((a, b, c), grads, strict=True):
        p.grad = g.clone()
    opt.step()
    for p, w, g in zip((a, b, c), start, grads, strict=True):
        scale = math.sqrt(max(1.0, p.size(0) / p.size(1)))
        expected = w - 0.1 * scale * newton_schulz_orthogonalize(g, dtype=torch.float32)
        torch.testing.assert_close(p.detach(), expected, atol=1e-5, rtol=0)


def test_muon_rejects_non_matrices_and_unknown_ns_dtype() -> None:
    with pytest.raises(ValueError, match="2-D"):
        Muon([nn.Parameter(torch.zeros(4))])
    with pytest.raises(ValueError, match="fp64"):
        Muon([_muon_param(2, 2)], ns_dtype="fp64")


# --- parameter split and builders --------------------------------------------------------------


def _ids(params: list[nn.Parameter] | list[tuple[str, nn.Parameter]]) -> set[int]:
    return {id(p[1] if isinstance(p, tuple) else p) for p in params}


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("pos", ["rope", "learned"])
@pytest.mark.parametrize("attention", ["mha", "gqa", "mla"])
def test_split_parameters(make_gpt: MakeGPT, attention: str, pos: str, tie: bool) -> None:
    kwargs = {"attention_kwargs": {"q_lora_rank": 16}} if attention == "mla" else {}
    model = make_gpt(attention, "qk_rmsnorm", pos, "gelu", tie_embeddings=tie, **kwargs)
    split = split_parameters(model)
    groups = [split.hidden_matrices, split.embeddings_and_head, split.vectors]
    listed = [id(p) for group in groups for _, p in group]
    all_ids = {id(p) for p in model.parameters()}
    assert len(listed) == len(set(listed)) == len(all_ids)  # each exactly once, tied counted once
    assert set(listed) == all_ids

    hidden = _ids(split.hidden_matrices)
    assert all(name.startswith("blocks.") and p.ndim == 2 for name, p in split.hidden_matrices)
    block_matrices = {
        id(p) for n, p in model.named_parameters() if n.startswith("blocks.") and p.ndim == 2
    }
    assert hidden == block_matrices
    never_muon = [model.token_embedding.weight, model.lm_head.weight]
    if pos == "learned":
        never_muon.append(model.positions.table.weight)
    assert not _ids(never_muon) & hidden
    assert _ids(never_muon) <= _ids(split.embeddings_and_head)
    assert all(p.ndim < 2 for _, p in split.vectors)


def test_split_skips_frozen_parameters(make_gpt: MakeGPT) -> None:
    model = make_gpt("gqa", "qk_rmsnorm", "rope", "swiglu")
    frozen = model.blocks[0].attn.q_proj.weight
    frozen.requires_grad_(False)
    split = split_parameters(model)
    everything = split.hidden_matrices + split.embeddings_and_head + split.vectors
    assert id(frozen) not in _ids(everything)


def _optimizer_ids(opt: torch.optim.Optimizer) -> set[int]:
    return {id(p) for group in opt.param_groups for p in group["params"]}


@pytest.mark.parametrize("lr_scale", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_build_muon_adamw(make_gpt: MakeGPT, tie: bool, lr_scale: float) -> None:
    model = make_gpt("mla", "qk_rmsnorm", "learned", "gelu", tie_embeddings=tie)
    cfg = MuonAdamWConfig(lr_scale=lr_scale)
    opts = build_muon_adamw(cfg, model)
    assert [type(o) for o in opts] == [Muon, torch.optim.AdamW]
    muon, adamw = opts
    muon_ids, adamw_ids = _optimizer_ids(muon), _optimizer_ids(adamw)
    assert not muon_ids & adamw_ids
    assert muon_ids | adamw_ids == {id(p) for p in model.parameters()}
    assert muon_ids == _ids(split_parameters(model).hidden_matrices)
    assert muon.ns_dtype == cfg.ns_dtype
    assert all(g["lr"] == pytest.approx(0.02 * lr_scale) for g in muon.param_groups)
    assert all(g["lr"] == pytest.approx(3e-3 * lr_scale) for g in adamw.param_groups)
    for group in adamw.param_groups:
        decayed = group["weight_decay"] > 0
        assert all((p.ndim >= 2) == decayed for p in group["params"])
        assert group["weight_decay"] in (0.0, cfg.adamw_weight_decay)


def test_muon_adamw_config_rejects_unknown_ns_dtype() -> None:
    MuonAdamWConfig(ns_dtype="bf16").validate()
    with pytest.raises(ConfigError) as error:
        MuonAdamWConfig(ns_dtype="fp64").validate()
    for needle in ("ns_dtype='fp64'", "auto", "bf16", "fp32"):
        assert needle in str(error.value)


@pytest.mark.parametrize("lr_scale", [1.0, 0.5, 3.0])
def test_build_adamw(make_gpt: MakeGPT, lr_scale: float) -> None:
    model = make_gpt("gqa", "qk_rmsnorm", "learned", "gelu", tie_embeddings=False)
    cfg = AdamWConfig(lr_scale=lr_scale, weight_decay=0.1)
    (opt,) = build_adamw(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    assert _optimizer_ids(opt) == {id(p) for p in model.parameters()}
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(p) for p in model.parameters() if p.ndim >= 2}
    assert all(g["weight_decay"] in (0.0, 0.1) for g in opt.param_groups)
    assert all(g["lr"] == pytest.approx(3e-3 * lr_scale) for g in opt.param_groups)


def test_adamw_embed_lr_gives_muons_adamw_side_its_own_rate(make_gpt: MakeGPT) -> None:
    """With embed_lr set, AdamW puts exactly the parameters muon_adamw gives its AdamW side at
    that rate (scaled like every rate), and the hidden matrices at lr; decay is unchanged."""
    model = make_gpt("gqa", "qk_rmsnorm", "learned", "gelu", tie_embeddings=False)
    (opt,) = build_adamw(AdamWConfig(lr=1e-3, embed_lr=8e-3, lr_scale=0.5), model)
    _, muon_side = build_muon_adamw(MuonAdamWConfig(), model)
    rates = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert {i for i, r in rates.items() if r == pytest.approx(4e-3)} == _optimizer_ids(muon_side)
    assert {i for i, r in rates.items() if r == pytest.approx(5e-4)} == {
        id(p) for _, p in split_parameters(model).hidden_matrices
    }
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(p) for p in model.parameters() if p.ndim >= 2}
    with pytest.raises(ConfigError, match="embed_lr=0"):
        AdamWConfig(embed_lr=0.0).validate()


# --- LR schedule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.1),  # warm-up: (step + 1) / warmup = 1/10
        (4, 0.5),
        (9, 1.0),  # last warm-up step reaches the peak
        (10, 1.0),  # cosine starts at 1 (progress 0)
        (55, 0.55),  # progress 45/90 = 1/2: 0.1 + 0.9 * 0.5 * (1 + cos(pi/2))
        (25, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 6))),  # progress 15/90 = 1/6
        (100, 0.1),  # floor
        (1000, 0.1),  # stays on the floor
    ],
)
def test_lr_multiplier(step: int, expected: float) -> None:
    assert lr_multiplier(step, warmup_steps=10, total_steps=100, min_ratio=0.1) == pytest.approx(
        expected
    )


def test_lr_multiplier_without_warmup_and_monotone_decay() -> None:
    assert lr_multiplier(0, warmup_steps=0, total_steps=50, min_ratio=0.0) == pytest.approx(1.0)
    assert lr_multiplier(50, warmup_steps=0, total_steps=50, min_ratio=0.0) == pytest.approx(0.0)
    values = [lr_multiplier(s, 10, 100, 0.1) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))


# --- every combination overfits one batch --------------------------------------------------------

COMBOS = list(
    itertools.product(
        ("mha", "gqa", "mla"), ("qk_rmsnorm", "none"), ("rope", "learned"), ("swiglu", "gelu")
    )
)
OVERFIT_VOCAB, OVERFIT_ALPHABET, OVERFIT_MAX_STEPS = 64, 8, 200


def steps_to_overfit(model: GPT, optimizer: str, max_steps: int = OVERFIT_MAX_STEPS) -> int | None:
    """Train on one fixed 4 x 16 batch with the default hyper-parameters (constant LR); return the
    number of steps after which the loss is below 20% of its initial value, or None.

    The batch uses only 8 of the 64 token ids, so each token is followed by many different ones:
    a bigram (embedding -> head) shortcut plateaus near ln 8 ~ 2.1 nats, well above the threshold
    of 0.2 x ln 64 ~ 0.83, and memorising needs the attention blocks and positions.
    """
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, OVERFIT_ALPHABET, (4, 17), generator=gen)
    inputs, targets = data[:, :-1], data[:, 1:]
    if optimizer == "muon_adamw":
        optimizers = build_muon_adamw(MuonAdamWConfig(), model)
    else:
        optimizers = build_adamw(AdamWConfig(), model)
    model.train()
    initial: float | None = None
    for step in range(max_steps + 1):
        _, loss = model(inputs, targets)
        assert loss is not None and torch.isfinite(loss)
        initial = loss.item() if initial is None else initial
        if loss.item() < 0.2 * initial:
            return step
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimizers:
            opt.step()
    return None


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["muon_adamw", "adamw"])
@pytest.mark.parametrize(
    ("attention", "norm", "pos", "ffn"), COMBOS, ids=["-".join(c) for c in COMBOS]
)
def test_overfits_one_batch(
    make_gpt: MakeGPT, attention: str, norm: str, pos: str, ffn: str, optimizer: str
) -> None:
    model = make_gpt(attention, norm, pos, ffn, vocab_size=OVERFIT_VOCAB, max_seq_len=16)
    steps = steps_to_overfit(model, optimizer)
    assert steps is not None, f"loss stayed above 20% of its start for {OVERFIT_MAX_STEPS} steps"


# --- Muon: fused projections and the foreach path ------------------------------------------------


def _block_param(blocks: tuple[int, ...], cols: int, seed: int) -> nn.Parameter:
    p = nn.Parameter(_gaussian(sum(blocks), cols, seed=seed))
    p.orthogonalize_blocks = blocks
    return p


@pytest.mark.parametrize("nesterov", [True, False], ids=["nesterov", "heavy_ball"])
def test_muon_fused_blocks_equal_separate_parameters(nesterov: bool) -> None:
    """A [q; k; v] weight with orthogonalize_blocks gets exactly the updates of three separate
    parameters with the same gradients: same momentum, same per-shape LR scale."""
    blocks, cols = (12, 4, 4), 6  # q is tall (scale sqrt(2)), k and v are wide (scale 1)
    fused = _block_param(blocks, cols, seed=0)
    separate = [nn.Parameter(t.clone()) for t in fused.detach().split(blocks)]
    kwargs = dict(lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=0.1, ns_dtype="fp32")
    opt_fused, opt_separate = Muon([fused], **kwargs), Muon(separate, **kwargs)
    for step in range(3):
        grad = _gaussian(sum(blocks), cols, seed=10 + step)
        fused.grad = grad.clone()
        for p, g in zip(separate, grad.split(blocks), strict=True):
            p.grad = g.clone()
        opt_fused.step()
        opt_separate.step()
    torch.testing.assert_close(
        fused.detach(), torch.cat([p.detach() for p in separate]), atol=1e-7, rtol=0
    )
    # Orthogonalising the fused matrix whole would be a different update.
    whole = nn.Parameter(_gaussian(sum(blocks), cols, seed=0))
    opt_whole = Muon([whole], **kwargs)
    for step in range(3):
        whole.grad = _gaussian(sum(blocks), cols, seed=10 + step)
        opt_whole.step()
    assert (whole.detach() - fused.detach()).abs().max() > 1e-3


def _plain_loop_muon(groups: list[dict], grads: list[list[torch.Tensor]], steps: int) -> None:
    """The pre-foreach Muon written as a per-parameter loop, over matrix views: momentum per
    parameter, then per group the views stacked by shape (first-seen order), one batched
    Newton-Schulz, decay and update per parameter / view."""
    buffers = {id(p): torch.zeros_like(p) for g in groups for p in g["params"]}
    for step in range(steps):
        for group, group_grads in zip(groups, grads[step], strict=True):
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            by_shape: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
            for p, g in zip(group["params"], group_grads, strict=True):
                if g is None:
                    continue
                buf = buffers[id(p)]
                buf.mul_(mu).add_(g)
                update = g.add(buf, alpha=mu) if group["nesterov"] else buf
                blocks = getattr(p, "orthogonalize_blocks", None) or (p.size(-2),)
                with torch.no_grad():
                    p.mul_(1 - lr * wd)
                batch_p = p.detach().unbind(0) if p.ndim == 3 else (p.detach(),)
                batch_u = update.unbind(0) if p.ndim == 3 else (update,)
                for pm, um in zip(batch_p, batch_u, strict=True):
                    for pv, uv in zip(pm.split(blocks), um.split(blocks), strict=True):
                        by_shape.setdefault(tuple(uv.shape), []).append((pv, uv))
            for (rows, cols), pairs in by_shape.items():
                ortho = newton_schulz_orthogonalize(
                    torch.stack([u for _, u in pairs]), dtype=torch.float32
                )
                scale = max(1.0, rows / cols) ** 0.5
                for (pv, _), o in zip(pairs, ortho, strict=True):
                    pv.add_(o, alpha=-lr * scale)


def test_muon_step_equals_plain_loop_exactly() -> None:
    """The foreach / preallocated-buffer step changes nothing on CPU: bitwise the same weights
    as the plain loop, over groups, shapes, fused blocks, 3-D batches and a missing gradient."""
    shapes_and_blocks = [((8, 4), None), ((8, 4), None), ((12, 6), (4, 8)), ((3, 8, 4), None),
                         ((4, 8), None), ((6, 6), None)]  # fmt: skip
    settings = [dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.1),
                dict(lr=0.01, momentum=0.9, nesterov=False, weight_decay=0.0)]  # fmt: skip

    def make() -> list[nn.Parameter]:
        params = []
        for i, (shape, blocks) in enumerate(shapes_and_blocks):
            p = nn.Parameter(_gaussian(*shape, seed=i))
            if blocks:
                p.orthogonalize_blocks = blocks
            params.append(p)
        return params

    steps = 3
    grads = [
        [
            [_gaussian(*shape, seed=100 * s + i) for i, (shape, _) in enumerate(shapes_and_blocks[:4])],
            [None] + [_gaussian(*shape, seed=100 * s + 50 + i) for i, (shape, _) in enumerate(shapes_and_blocks[5:])],
        ]
        for s in range(steps)
    ]  # fmt: skip
    ours, reference = make(), make()
    group_params = lambda ps: [ps[:4], ps[4:]]  # noqa: E731
    opt = Muon(
        [{"params": g, **s} for g, s in zip(group_params(ours), settings, strict=True)],
        ns_dtype="fp32",
    )
    for s in range(steps):
        for params, gs in zip(group_params(ours), grads[s], strict=True):
            for p, g in zip(params, gs, strict=True):
                p.grad = None if g is None else g.clone()
        opt.step()
    _plain_loop_muon(
        [{"params": g, **s} for g, s in zip(group_params(reference), settings, strict=True)],
        grads,
        steps,
    )
    for a, b in zip(ours, reference, strict=True):
        assert torch.equal(a.detach(), b.detach())


def test_muon_rejects_bad_blocks() -> None:
    p = _muon_param(6, 4)
    p.orthogonalize_blocks = (2, 3)
    with pytest.raises(ValueError, match=r"orthogonalize_blocks=\(2, 3\).*6 rows"):
        Muon([p])
    with pytest.raises(ValueError, match="2-D"):
        Muon([nn.Parameter(torch.zeros(2, 2, 2, 2))])


def test_muon_public_helpers() -> None:
    fused = _block_param((4, 2, 2), 6, seed=0)
    experts = nn.Parameter(_gaussian(3, 2, 6, seed=1))
    opt = Muon([fused, experts, _muon_param(4, 6)], ns_dtype="auto")
    assert opt.matrix_shapes() == {(4, 6): 2, (2, 6): 5}
    assert opt.ns_dtype_for(fused) == torch.float32  # auto on CPU
    assert opt._ns_dtype(fused) == torch.float32  # the old private name still works
    assert Muon([_muon_param(2, 2)], ns_dtype="bf16").ns_dtype_for(fused) == torch.bfloat16


def test_muon_never_compiles_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compile(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.compile called on CPU")

    monkeypatch.setattr(torch, "compile", no_compile)
    p = _muon_param(8, 4)
    p.grad = _gaussian(8, 4, seed=1)
    Muon([p], compile_ns=True).step()


def test_muon_compile_failure_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where compiling is attempted (CUDA), a failing compile warns once and runs eagerly."""
    calls = []

    def broken_compile(fn: object, **kwargs: object) -> Callable[..., torch.Tensor]:
        def run(*args: object, **kw: object) -> torch.Tensor:
            calls.append(1)
            raise RuntimeError("inductor exploded")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    opt = Muon([_muon_param(8, 4)], ns_dtype="fp32")
    monkeypatch.setattr(opt, "_compile_wanted", lambda stack: not opt._compile_failed)
    stack = _gaussian(2, 8, 4, seed=3)
    with pytest.warns(RuntimeWarning, match="inductor exploded"):
        out = opt.orthogonalize(stack)
    assert torch.equal(out, newton_schulz_orthogonalize(stack, dtype=torch.float32))
    opt.orthogonalize(stack)  # no second attempt, no second warning
    assert calls == [1]


# --- optimizer hints and the option contract ----------------------------------------------------


def test_optimizer_hint_overrides_the_default_rule(make_gpt: MakeGPT) -> None:
    model = make_gpt("gqa", "qk_rmsnorm", "rope", "swiglu")
    to_adamw = model.blocks[0].ffn.up_proj.weight
    to_adamw.optimizer_hint = "adamw"
    split = split_parameters(model)
    assert id(to_adamw) in _ids(split.embeddings_and_head)
    assert id(to_adamw) not in _ids(split.hidden_matrices)
    to_adamw.optimizer_hint = "sgd"
    with pytest.raises(ValueError, match="optimizer_hint='sgd'"):
        split_parameters(model)


def test_param_hints_survive_a_parameter_swap(make_gpt: MakeGPT) -> None:
    """What FSDP2's fully_shard does to parameters (new objects, attributes lost), undone."""
    model = make_gpt("gqa", "qk_rmsnorm", "rope", "swiglu")
    kv = model.blocks[0].attn.kv_proj
    kv.weight.orthogonalize_blocks = (32, 32)
    hints = collect_param_hints(model)
    assert hints["blocks.0.attn.kv_proj.weight"] == {"orthogonalize_blocks": (32, 32)}
    kv.weight = nn.Parameter(kv.weight.detach().clone())
    assert not hasattr(kv.weight, "orthogonalize_blocks")
    restore_param_hints(model, hints)
    assert kv.weight.orthogonalize_blocks == (32, 32)


@pytest.mark.parametrize("name", sorted(OPTIMIZER.names()))
def test_optimizer_options_follow_the_contract(make_gpt: MakeGPT, name: str) -> None:
    cfg = OPTIMIZER.entry(name).config_class()
    assert isinstance(cfg, ComponentConfig) and cfg.name == name
    model = make_gpt("gqa", "qk_rmsnorm", "rope", "swiglu")
    cfg.validate(model)
    cfg.validate()
    optimizers = OPTIMIZER.get(name)(cfg, model)
    covered = [id(p) for opt in optimizers for g in opt.param_groups for p in g["params"]]
    assert len(covered) == len(set(covered))
    assert set(covered) == {id(p) for p in model.parameters()}
