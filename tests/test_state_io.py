"""Pickle-free trainer state: exact round trips, bit-identical continuation, refusal of pickles."""

from __future__ import annotations

import copy
import json
import logging
import pickle
import random
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gpt5_ablate.errors import InputError
from gpt5_ablate.model import GPT
from gpt5_ablate.optim import Muon, MuonAdamWConfig, build_muon_adamw, lr_multiplier
from gpt5_ablate.train.state_io import load_state, save_state
from gpt5_ablate.train.untrusted import (
    TRUST_OPTION,
    load_legacy_pickle,
    pickle_files,
    refuse_pickle_files,
)

pytestmark = pytest.mark.usefixtures("single_thread")
MakeGPT = Callable[..., GPT]


def assert_same(actual: Any, expected: Any, where: str = "state") -> None:
    """Equal values AND equal types all the way down (tuple vs list, int vs str keys, numpy vs
    torch, dtypes), NaN equal to NaN."""
    assert type(actual) is type(expected), f"{where}: {type(actual)} != {type(expected)}"
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, where
        assert actual.device.type == "cpu", where
        assert torch.equal(actual, expected.cpu()) or (
            actual.is_floating_point()
            and torch.allclose(actual, expected, equal_nan=True, atol=0, rtol=0)
        ), where
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, where
        np.testing.assert_array_equal(actual, expected, err_msg=where)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{where}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            assert type(next(k for k in actual if k == key)) is type(key), f"{where} key {key!r}"
            assert_same(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{where}[{i}]")
    elif isinstance(expected, float) and expected != expected:
        assert actual != actual, where  # NaN
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def round_trip(state: dict[str, Any], directory: Path) -> dict[str, Any]:
    save_state(state, directory)
    return load_state(directory)


# --- a realistic trainer state --------------------------------------------------------------------


class TinyRun:
    """A real tiny GPT with Muon + AdamW, LambdaLR schedules, a grad scaler and every RNG in use:
    the trainer loop's moving parts, small enough for milliseconds per step."""

    def __init__(self, make_gpt: MakeGPT, seed: int) -> None:
        self.model = make_gpt("gqa", seed=seed).train()
        self.optimizers = build_muon_adamw(MuonAdamWConfig(), self.model)
        assert isinstance(self.optimizers[0], Muon)
        schedule = partial(lr_multiplier, warmup_steps=2, total_steps=12, min_ratio=0.1)
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in self.optimizers]
        # Enabled on CPU so that its state is real (scale, growth tracker), not an empty dict.
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)

    def step(self) -> float:
        idx = torch.randint(0, 97, (2, 17))  # torch's RNG
        jitter = 1 + 0.01 * random.random() + 0.01 * float(np.random.rand())  # python's, numpy's
        _, loss = self.model(idx[:, :-1], idx[:, 1:])
        self.scaler.scale(loss * jitter).backward()
        for opt in self.optimizers:
            self.scaler.step(opt)
        self.scaler.update()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        for sched in self.schedulers:
            sched.step()
        return loss.item()

    def trainer_state(self, step: int) -> dict[str, Any]:
        return {
            "step": step,
            "elapsed_s": 1.25,
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "scaler": self.scaler.state_dict(),
            "loader": {"epoch": 0, "position": 48, "seed": 0, "n_blocks": 120},
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
            },
            "skipped_steps": 0,
            "run_id": None,
            "first_eval": {"val/loss": 4.5, "val/accuracy": 0.125},
            "interval_loss": torch.tensor(12.5),
            "interval_steps": 3,
            "world_size": 1,
        }

    def restore(self, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.model.load_state_dict(weights)
        for opt, opt_state in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        for sched, sched_state in zip(self.schedulers, state["schedulers"], strict=True):
            sched.load_state_dict(sched_state)
        self.scaler.load_state_dict(state["scaler"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])


def test_trainer_state_round_trip_and_bit_identical_continuation(
    make_gpt: MakeGPT, tmp_path: Path
) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    run = TinyRun(make_gpt, seed=0)
    for _ in range(3):
        run.step()
    state = run.trainer_state(step=3)
    expected = copy.deepcopy(state)  # the live state_dicts keep changing as training goes on
    weights = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    save_state(state, tmp_path)
    # Python ints as int dict keys, tuples (betas, RNG states) and param_groups all survive.
    muon_state = expected["optimizers"][0]["state"]
    assert muon_state and all(isinstance(k, int) for k in muon_state)
    assert expected["scaler"]["scale"] != 0

    uninterrupted = [run.step() for _ in range(4)]
    final_weights = {k: v.detach().clone() for k, v in run.model.state_dict().items()}

    loaded = load_state(tmp_path)
    assert_same(loaded, expected)
    # A fresh run from another seed, with its RNGs moved on, restored from the files only.
    random.random(), np.random.rand(), torch.rand(3)
    resumed = TinyRun(make_gpt, seed=123)
    resumed.restore(weights, loaded)
    assert [resumed.step() for _ in range(4)] == uninterrupted
    for name, tensor in resumed.model.state_dict().items():
        assert torch.equal(tensor, final_weights[name]), name


def test_files_are_safetensors_and_standard_json(tmp_path: Path) -> None:
    state = {"a": torch.arange(4), "x": float("inf"), "n": float("nan")}
    save_state(state, tmp_path, stem="trainer_state")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "trainer_state.json",
        "trainer_state.safetensors",
    ]

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    document = json.loads(
        (tmp_path / "trainer_state.json").read_text(), parse_constant=no_constants
    )
    assert document["format"] == "gpt5_ablate.state" and document["version"] == 1
    assert list(load_file(tmp_path / "trainer_state.safetensors")) == ["t0"]


# --- values ----------------------------------------------------------------------------------------


def test_tensor_edge_cases(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = {
        "bf16": torch.randn(5, dtype=torch.bfloat16),
        "fp16": torch.randn(2, 2, dtype=torch.float16),
        "scalar": torch.tensor(3.5),
        "int_scalar": torch.tensor(7, dtype=torch.int64),
        "empty": torch.zeros(0),
        "empty_2d": torch.zeros(2, 0, dtype=torch.bfloat16),
        "transposed": base.t(),  # non-contiguous
        "strided": base[:, ::2],  # non-contiguous view
        "row_views": [base[0], base[1]],  # views sharing one storage
        "rng": torch.get_rng_state(),  # ByteTensor
        "bool": torch.tensor([True, False]),
        "uint32": torch.tensor([1, 2**32 - 1], dtype=torch.uint32),
        "complex": torch.tensor([1 + 2j], dtype=torch.complex64),
        "param": torch.nn.Parameter(torch.ones(2)),
        "grad": torch.ones(2, requires_grad=True) * 2,
    }
    loaded = round_trip(state, tmp_path)
    expected = {k: v for k, v in state.items() if k not in ("param", "grad")}
    assert_same({k: loaded[k] for k in expected}, expected)
    assert loaded["transposed"].is_contiguous() and loaded["strided"].is_contiguous()
    assert type(loaded["param"]) is torch.Tensor and torch.equal(loaded["param"], torch.ones(2))
    assert not loaded["grad"].requires_grad and torch.equal(loaded["grad"], torch.full((2,), 2.0))


def test_shared_tensor_is_stored_once_and_stays_shared(tmp_path: Path) -> None:
    shared = torch.randn(4)
    loaded = round_trip({"a": shared, "b": [shared], "c": shared.clone()}, tmp_path)
    assert len(load_file(tmp_path / "trainer_state.safetensors")) == 2
    assert loaded["a"] is loaded["b"][0]
    assert loaded["c"] is not loaded["a"] and torch.equal(loaded["c"], shared)


def test_python_and_numpy_values(tmp_path: Path) -> None:
    state = {
        "none": None,
        "flags": [True, False],
        "int": 2**70,
        "float": 0.1,
        "non_finite": [float("inf"), float("-inf"), float("nan")],
        "text": 'ünïcode \n "quoted"',
        "bytes": b"\x00\xffpickle?",
        "tuple": (1, (2, [3, (4,)]), ()),
        "list": [[], {}],
        "int_keys": {0: "a", 1: {2: "b"}, -3: None},
        "mixed_keys": {"x": 1, 2: 3, (4, 5): 6, None: 7, 1.5: 8, True: 9},
        "$type": "a real key that looks like a marker",
        "nested": {"$type": "tensor", "key": "t0"},  # data, not a marker
        "np_uint32": np.arange(5, dtype=np.uint32),
        "np_big_endian": np.arange(3, dtype=">i4"),
        "np_float16": np.array([1.5, -2.0], dtype=np.float16),
        "np_0d": np.array(3.25),
        "np_empty": np.zeros((0, 3), dtype=np.int16),
        "np_bool": np.array([True, False]),
        "np_fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        "np_scalars": [
            np.float32(1.1),
            np.int64(-5),
            np.bool_(True),
            np.uint8(255),
            np.float64("nan"),
        ],
        "torch_size": torch.Size([2, 3]),
        "dtype": torch.bfloat16,
    }
    loaded = round_trip(state, tmp_path)
    assert_same(loaded, state)
    assert loaded["np_fortran"].flags.writeable


def test_rng_states_restore(tmp_path: Path) -> None:
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    loaded = round_trip(state, tmp_path)
    random.setstate(loaded["python"])
    np.random.set_state(loaded["numpy"])
    torch.set_rng_state(loaded["torch"])
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (object(), "state['bad']: a builtins.object cannot be stored"),
        ({1, 2}, "builtins.set"),
        (np.array(["a"]), "numpy dtype <U1"),
        (np.array([1 + 2j], dtype=np.complex128), "not supported"),
        (torch.zeros(2, dtype=torch.complex128), "not supported by safetensors"),
        (torch.eye(2).to_sparse(), "only dense tensors"),
        ({torch.zeros(1).numpy().tobytes(): lambda: 0}, "builtins.function"),
    ],
)
def test_unsupported_values_are_refused(value: Any, message: str, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        save_state({"bad": value}, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_save_replaces_atomically(tmp_path: Path) -> None:
    save_state({"v": torch.zeros(3)}, tmp_path)
    save_state({"v": torch.ones(2)}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "trainer_state.json",
        "trainer_state.safetensors",
    ]
    assert torch.equal(load_state(tmp_path)["v"], torch.ones(2))


# --- loading executes nothing; damage is reported ------------------------------------------------


def test_load_state_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_state({"optim": {0: {"m": torch.ones(2)}}, "rng": random.getstate()}, tmp_path)

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("load_state must not unpickle")

    for target in (pickle, torch):
        monkeypatch.setattr(target, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    assert torch.equal(load_state(tmp_path)["optim"][0]["m"], torch.ones(2))


def _edit_json(directory: Path, edit: Callable[[str], str]) -> Path:
    path = directory / "trainer_state.json"
    path.write_text(edit(path.read_text()))
    return path


def test_missing_tensor_names_the_file(tmp_path: Path) -> None:
    save_state({"a": torch.ones(1)}, tmp_path)
    path = _edit_json(tmp_path, lambda text: text.replace('"key":"t0"', '"key":"t9"'))
    with pytest.raises(InputError, match="refers to tensor 't9'") as error:
        load_state(tmp_path)
    assert str(path) in str(error.value)
    assert "trainer.resume=false" in str(error.value)


def test_missing_tensor_file(tmp_path: Path) -> None:
    save_state({"a": torch.ones(1)}, tmp_path)
    (tmp_path / "trainer_state.safetensors").unlink()
    with pytest.raises(InputError, match=r"trainer_state\.safetensors does not exist"):
        load_state(tmp_path)


def test_tensor_file_from_another_save(tmp_path: Path) -> None:
    save_state({"a": torch.ones(1)}, tmp_path / "one")
    save_state({"a": torch.zeros(1)}, tmp_path / "two")
    (tmp_path / "two" / "trainer_state.safetensors").replace(
        tmp_path / "one" / "trainer_state.safetensors"
    )
    with pytest.raises(InputError, match="belongs to a different save"):
        load_state(tmp_path / "one")


def test_shape_mismatch_is_damage(tmp_path: Path) -> None:
    save_state({"a": torch.ones(2)}, tmp_path)
    _edit_json(tmp_path, lambda text: text.replace('"shape":[2]', '"shape":[3]'))
    with pytest.raises(InputError, match=r"expects torch\.float32"):
        load_state(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text[: len(text) // 2], "cannot be read as a trainer state"),
        (
            lambda text: text.replace("gpt5_ablate.state", "other"),
            "not a gpt5_ablate trainer state",
        ),
        (lambda text: text.replace('"version":1', '"version":99'), "format version 99"),
        (lambda text: text.replace('"tuple"', '"os.system"'), "unknown type marker 'os.system'"),
        (lambda text: text.replace('"<u4"', '"O"'), "numpy dtype 'O' is not allowed"),
        (
            lambda text: text.replace('"trainer_state.safetensors"', '"../x.safetensors"'),
            "names no valid",
        ),
    ],
)
def test_malformed_json_is_an_input_error(
    edit: Callable[[str], str], message: str, tmp_path: Path
) -> None:
    save_state({"t": (1, 2), "a": np.arange(2, dtype=np.uint32)}, tmp_path)
    _edit_json(tmp_path, edit)
    with pytest.raises(InputError, match=message) as error:
        load_state(tmp_path)
    assert "trainer_state.json" in str(error.value)


def test_no_state_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="has no trainer state"):
        load_state(tmp_path)


def test_corrupt_tensor_file(tmp_path: Path) -> None:
    save_state({"a": torch.ones(1)}, tmp_path)
    (tmp_path / "trainer_state.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(InputError, match="cannot be read"):
        load_state(tmp_path)


# --- legacy pickles --------------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates ``marker``: what a malicious checkpoint would do, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_planted_pickle_is_refused_unless_trusted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "trainer_state.pt"
    torch.save({"step": 3, "payload": _Payload(marker)}, path)
    with pytest.raises(InputError) as error:
        load_legacy_pickle(path, trusted=False)
    assert not marker.exists()
    message = str(error.value)
    assert str(path) in message and TRUST_OPTION in message and "\n" not in message

    # The payload is live: trusting the file runs it (which is exactly why it needs an opt-in).
    with caplog.at_level(logging.WARNING, logger="gpt5_ablate"):
        state = load_legacy_pickle(path, trusted=True)
    state["payload"].close()
    assert marker.exists() and state["step"] == 3
    notices = [r for r in caplog.records if r.name == "gpt5_ablate"]
    assert len(notices) == 1 and str(path) in notices[0].getMessage()


def test_trusted_legacy_state_loads(tmp_path: Path) -> None:
    state = {"step": 5, "rng": {"torch": torch.get_rng_state()}, "optimizers": [{"state": {0: {}}}]}
    torch.save(state, tmp_path / "trainer_state.pt")
    assert_same(load_legacy_pickle(tmp_path / "trainer_state.pt", trusted=True), state)


def test_refuse_pickle_files(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.yaml").write_text("a: 1\n")
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "tokenizer.json").write_text("{}")
    refuse_pickle_files(tmp_path)  # a clean checkpoint passes

    for name in ("tokenizer/pytorch_model.bin", "extra.PKL", "trainer_state.pt"):
        (tmp_path / name).write_bytes(b"\x80\x04.")
    with pytest.raises(InputError, match="pickle-format file") as error:
        refuse_pickle_files(tmp_path)
    for name in ("pytorch_model.bin", "extra.PKL", "trainer_state.pt"):
        assert name in str(error.value)
    assert [p.name for p in pickle_files(tmp_path, ignore=["trainer_state.pt"])] == [
        "extra.PKL",
        "pytorch_model.bin",
    ]
    for name in ("tokenizer/pytorch_model.bin", "extra.PKL"):
        (tmp_path / name).unlink()
    refuse_pickle_files(tmp_path, ignore=["trainer_state.pt"])
