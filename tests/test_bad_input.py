"""Bad configurations and inputs fail before training, with a message that names the bad value.

Each in-process case runs the real ``train()`` on a composed config and checks three things: the
error type and message (the value and, where there is a closed set, the valid choices), and that
nothing was left behind: no MLflow store (so no run), no run dir (so no checkpoint), and no cache
entry. A few cases go through the real CLI to check what a user sees: exit status 2 and a single
``error: ...`` line without a traceback (Hydra's own composition errors exit 1 with its message).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from gpt5_ablate.config_errors import unknown_key_message
from gpt5_ablate.data import prepare_data
from gpt5_ablate.errors import ConfigError, InputError
from gpt5_ablate.generate import main as generate_main
from gpt5_ablate.train.loop import train
from gpt5_ablate.train.plan import make_plan
from tests.test_reliability import cli_env
from tests.train_helpers import compose_config


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_blank_files(root: Path) -> None:
    (root / "blank").mkdir()
    for name in ("a.txt", "b.txt"):
        (root / "blank" / name).write_text("  \n\n")


@dataclass
class Case:
    id: str
    overrides: list[str]
    error: type[Exception]
    match: str  # regex searched in the message
    uri: str = "sqlite:///{tmp}/mlflow.db"  # {tmp}: the test's tmp dir; {port}: a closed port
    setup: Callable[[Path], None] | None = None
    marks: list[pytest.MarkDecorator] = field(default_factory=list)


CASES = [
    # --- sizes and counts -------------------------------------------------------------------
    Case(
        "negative_max_steps",
        ["trainer.max_steps=-1"],
        ConfigError,
        r"trainer\.max_steps=-1 is invalid: give a positive step budget",
    ),
    Case("zero_max_tokens", ["trainer.max_tokens=0"], ConfigError, r"trainer\.max_tokens=0 must"),
    Case(
        "bad_compile_mode",
        ["trainer.compile=maybe"],
        ConfigError,
        r"trainer\.compile='maybe' is invalid\. Valid choices: auto, true, false",
    ),
    Case(
        "negative_d_model",
        ["model.d_model=-8"],
        ConfigError,
        r"model\.d_model=-8 is invalid: it must be a positive integer",
    ),
    Case("zero_layers", ["model.n_layers=0"], ConfigError, r"model\.n_layers=0 is invalid"),
    Case(
        "zero_micro_batch",
        ["trainer.micro_batch_size=0"],
        ConfigError,
        r"trainer\.micro_batch_size=0 is invalid: it must be >= 1",
    ),
    Case("negative_warmup", ["trainer.warmup_steps=-3"], ConfigError, r"trainer\.warmup_steps=-3"),
    Case("negative_ffn_hidden", ["ffn.hidden_dim=-5"], ConfigError, r"ffn\.hidden_dim=-5"),
    Case("negative_seed", ["seed=-1"], ConfigError, r"seed=-1 is invalid: use an integer >= 0"),
    Case(
        "seq_len_above_max_positions",
        ["trainer.seq_len=128"],  # TINY_OVERRIDES: model.max_seq_len=64
        ConfigError,
        r"trainer\.seq_len=128 exceeds model\.max_seq_len=64",
    ),
    # --- incompatible head counts and ranks ---------------------------------------------------
    Case(
        "kv_heads_not_dividing_heads",
        ["attention.n_kv_heads=3"],
        ConfigError,
        r"model\.n_heads=4 is not divisible by attention\.n_kv_heads=3; valid n_kv_heads: 1, 2, 4",
    ),
    Case(
        "heads_not_dividing_d_model",
        ["model.n_heads=5"],
        ConfigError,
        r"model\.d_model=64 is not divisible by model\.n_heads=5; choose n_heads among the "
        r"divisors of d_model \(1, 2, 4, 8",
    ),
    Case(
        "mla_kv_rank_above_d_model",
        ["attention=mla", "attention.kv_lora_rank=1000"],
        ConfigError,
        r"attention\.kv_lora_rank=1000 is larger than model\.d_model=64.*use 1\.\.64",
    ),
    Case(
        "mla_q_rank_above_d_model",
        ["attention=mla", "attention.q_lora_rank=1000"],
        ConfigError,
        r"attention\.q_lora_rank=1000 is larger than model\.d_model=64",
    ),
    # --- unknown options ------------------------------------------------------------------------
    Case(
        "unknown_attention_name",
        ["attention.name=foo"],
        ConfigError,
        r"Unknown attention 'foo'\. Valid choices: gqa, mha, mla",
    ),
    Case(
        "unknown_dataset",
        ["data.name=nope"],
        ConfigError,
        r"Unknown data 'nope'\. Valid choices: .*stdlib.*text_files",
    ),
    Case(
        "unknown_precision",
        ["trainer.precision=fp8"],
        ConfigError,
        r"trainer\.precision='fp8' is invalid\. Valid choices: auto, fp32, bf16, fp16",
    ),
    Case(
        "fp16_on_cpu",
        ["trainer.precision=fp16", "trainer.device=cpu"],
        ConfigError,
        r"trainer\.precision='fp16' needs a GPU.*on CPU use fp32 or bf16",
    ),
    Case(
        "cuda_without_gpu",
        ["trainer.device=cuda"],
        ConfigError,
        r"trainer\.device='cuda' but no CUDA device is visible; use trainer\.device=auto or cpu",
        marks=[pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")],
    ),
    Case(
        "unknown_device",
        ["trainer.device=tpu"],
        ConfigError,
        r"trainer\.device='tpu' is invalid\. Valid choices: auto, cpu, cuda, mps",
    ),
    Case(
        "unknown_nonfinite_policy",
        ["trainer.on_nonfinite=ignore"],
        ConfigError,
        r"trainer\.on_nonfinite='ignore' is invalid\. Valid choices: stop, skip",
    ),
    Case(
        "unknown_ns_dtype",
        ["optimizer.ns_dtype=fp64"],
        ConfigError,
        r"optimizer\.ns_dtype='fp64' is invalid\. Valid choices: auto, bf16, fp32",
    ),
    # --- optimizer and schedule values ----------------------------------------------------------
    Case(
        "negative_lr", ["optimizer.lr=-1"], ConfigError, r"optimizer\.lr=-1\.0 must be a positive"
    ),
    Case(
        "betas_out_of_range",
        ["optimizer=adamw", "optimizer.betas=[0.9,1.5]"],
        ConfigError,
        r"betas=\[0\.9, 1\.5\] must be two numbers within \[0, 1\)",
    ),
    Case(
        "momentum_out_of_range",
        ["optimizer.momentum=1.5"],
        ConfigError,
        r"optimizer\.momentum=1\.5 must be within \[0, 1\)",
    ),
    Case("negative_grad_clip", ["trainer.grad_clip=-1"], ConfigError, r"trainer\.grad_clip=-1"),
    Case(
        "min_lr_ratio_above_one",
        ["trainer.min_lr_ratio=2"],
        ConfigError,
        r"trainer\.min_lr_ratio=2\.0 must be within \[0, 1\]",
    ),
    # --- data and tokenizer ---------------------------------------------------------------------
    Case(
        "empty_corpus_pattern_matches_nothing",
        ["data=text_files", "data.patterns=[/nonexistent/*.txt]"],
        InputError,
        r"data\.patterns entry '/nonexistent/\*\.txt' matches no files",
    ),
    Case(
        "empty_corpus_blank_files",
        ["data=text_files", "data.patterns=[{tmp}/blank/*.txt]"],
        InputError,
        r"data=text_files found only empty documents in 2 file\(s\)",
        setup=write_blank_files,
    ),
    Case(
        "zero_documents",
        ["data.max_docs=0"],
        InputError,
        r"data\.max_docs=0 leaves data=stdlib with no documents",
    ),
    Case(
        "one_document_cannot_be_split",
        ["data.max_docs=1"],
        InputError,
        r"data=stdlib has 1 document\(s\), but at least 3 are needed",
    ),
    Case(
        "val_fraction_out_of_range",
        ["data.val_fraction=1.5"],
        ConfigError,
        r"data\.val_fraction=1\.5 is invalid for data=stdlib.*strictly between 0 and 1",
    ),
    Case(
        "vocab_below_bytes",
        ["tokenizer.vocab_size=100"],
        ConfigError,
        r"tokenizer\.vocab_size=100 is too small.*at least 257",
    ),
    # --- tracking -------------------------------------------------------------------------------
    Case(
        "unreachable_tracking_server",
        [],
        InputError,
        r"tracking\.uri='http://127\.0\.0\.1:\d+' is unreachable",
        uri="http://127.0.0.1:{port}",
    ),
    Case(
        "sqlite_store_in_missing_dir",
        [],
        InputError,
        r"tracking\.uri='sqlite:///.*/missing/mlflow\.db' points at a SQLite file in .*/missing, "
        r"which does not exist",
        uri="sqlite:///{tmp}/missing/mlflow.db",
    ),
]


def cache_leftovers(cache: Path) -> list[Path]:
    """Files in the cache other than lock files (a lock file is harmless and reused)."""
    if not cache.exists():
        return []
    return [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_config_fails_before_anything_is_written(case: Case, tmp_path: Path) -> None:
    if case.setup is not None:
        case.setup(tmp_path)
    port = closed_port()
    fill = {"tmp": tmp_path, "port": port}
    cache, run_dir, store = tmp_path / "cache", tmp_path / "run", tmp_path / "mlflow.db"
    cfg = compose_config([o.format(**fill) for o in case.overrides], cache, case.uri.format(**fill))
    with pytest.raises(case.error, match=case.match):
        train(cfg, run_dir)
    assert not store.exists(), "an MLflow store (and maybe a run) was created"
    assert not run_dir.exists(), "a run dir was created"
    assert cache_leftovers(cache) == []


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize(
    "override, shown",
    [
        ("trainer.max_steps=abc", "abc"),
        ("model.d_model=1.5", "1.5"),
        ("trainer.resume=maybe", "maybe"),
        ("trainer.no_such_key=1", "no_such_key"),
    ],
)
def test_hydra_rejects_wrong_types_and_unknown_keys(
    override: str, shown: str, tmp_path: Path
) -> None:
    with pytest.raises((HydraException, OmegaConfBaseException)) as caught:
        compose_config([override], tmp_path / "cache", f"sqlite:///{tmp_path}/mlflow.db")
    text = f"{caught.value} {caught.value.__cause__ or ''}"
    assert shown in text
    assert override.split("=")[0].split(".")[-1] in text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["trainer.max_stepz=3"], "did you mean trainer.max_steps?"),
        (["max_step=3"], "did you mean trainer.max_steps?"),  # the key's last part is enough
        (["attention=mla", "attention.kv_lora_rnk=8"], "did you mean attention.kv_lora_rank?"),
        (["trainer.zzz=1"], "Settings under trainer: checkpoint_every, compile,"),
    ],
)
def test_an_unknown_key_names_the_nearest_valid_one(argv: list[str], expected: str) -> None:
    key = argv[-1].split("=")[0]
    message = unknown_key_message(key, argv)
    assert message.startswith(f"{key} is not a setting")
    assert expected in message
    assert "+" not in message  # Hydra's "+key=value" hint fails again on the typed config


def test_make_plan_needs_no_data_to_reject_values(tmp_path: Path) -> None:
    """The checks are cheap: make_plan alone catches them, before data or tracking exist."""
    cfg = compose_config(["attention.n_kv_heads=3"], tmp_path / "cache", "sqlite:///x.db")
    with pytest.raises(ConfigError, match=r"attention\.n_kv_heads=3"):
        make_plan(cfg)
    assert not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------------------------------
# Generation inputs (in-process: generate's main returns the exit status)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An existing MLflow store without runs."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"
    MlflowClient(uri).search_experiments()  # creates the schema
    return uri


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["checkpoint={tmp}/nowhere"],
            r"error: checkpoint='.*/nowhere' holds no checkpoint: expected a directory with "
            r"model\.safetensors",
        ),
        (
            ["run_id=0123456789abcdef", "tracking.uri={store}"],
            r"error: run_id='0123456789abcdef' does not exist in the MLflow store",
        ),
        (
            ["run_id=0123456789abcdef", "tracking.uri=sqlite:///{tmp}/typo.db"],
            r"error: tracking\.uri='sqlite:///.*/typo\.db': there is no MLflow store at",
        ),
        (
            ["run_id=0123456789abcdef", "tracking.uri=http://127.0.0.1:{port}"],
            r"error: tracking\.uri='http://127\.0\.0\.1:\d+' is unreachable",
        ),
        ([], r"error: Give exactly one of run_id=<mlflow run id> or checkpoint=<path>"),
        (
            ["checkpoint=x", "run_id=y"],
            r"error: Give exactly one of run_id=<mlflow run id> or checkpoint=<path>",
        ),
        (["checkpoint=x", "max_new_tokens=0"], r"error: max_new_tokens=0 must be positive"),
        (
            ["checkpoint=x", "temperature=hot"],
            r"error: temperature='hot' is not a number\.",
        ),
    ],
    ids=[
        "missing_checkpoint",
        "unknown_run_id",
        "missing_store",
        "unreachable_server",
        "neither",
        "both",
        "no_tokens",
        "bad_type",
    ],
)
def test_generate_rejects_bad_input(
    args: list[str],
    message: str,
    empty_store: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    fill = {"tmp": tmp_path, "port": closed_port(), "store": empty_store}
    assert generate_main([a.format(**fill) for a in args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    assert re.search(message, err), err
    assert not (tmp_path / "typo.db").exists()  # a mistyped store is not created


# ----------------------------------------------------------------------------------------------
# A damaged cache is not an error: the data layer rebuilds it


def test_corrupt_cache_is_rebuilt_and_training_recovers(tmp_path: Path) -> None:
    cache, uri = tmp_path / "cache", f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose_config(
        ["trainer.max_steps=2", "trainer.eval_every=2", "trainer.num_samples=0"], cache, uri
    )
    plan = make_plan(cfg)

    def prepare():  # the exact call train() makes
        return prepare_data(
            plan.data,
            plan.tokenizer,
            seq_len=plan.seq_len,
            cache_dir=cache,
            eval_tokens=plan.trainer.eval_tokens,
        )

    first = prepare()
    expected = np.array(first.train_blocks)
    train_file = first.cache_path / "train.npy"
    size = train_file.stat().st_size
    del first
    # Same size, garbage content: the marker's size check passes, loading the array fails.
    train_file.write_bytes(b"\x00garbage" * (size // 8) + b"\x00" * (size % 8))

    result = train(cfg, tmp_path / "run")  # rebuilds the entry, then trains as usual
    assert result.steps == 2
    rebuilt = prepare()
    assert not rebuilt.tokenized_now  # train() rebuilt it; now it loads
    np.testing.assert_array_equal(np.array(rebuilt.train_blocks), expected)


# ----------------------------------------------------------------------------------------------
# Through the real CLI: exit status and what the user reads


CLI_CASES: dict[str, tuple[list[str], int, list[str]]] = {
    # name: (args, exit status, texts stderr must contain)
    "wrong_type": (
        ["trainer.max_steps=abc"],
        1,
        ["trainer.max_steps", "abc"],
    ),
    "unknown_key_near_miss": (
        ["trainer.max_stepz=3"],
        2,
        ["error: trainer.max_stepz is not a setting: did you mean trainer.max_steps?"],
    ),
    "unknown_key_in_a_sweep": (
        ["-m", "attention=gqa,mla", "attention.n_kv_headz=1"],
        2,
        ["error: attention.n_kv_headz is not a setting: did you mean attention.n_kv_heads?"],
    ),
    "unknown_group_option": (
        ["attention=foo"],
        1,
        ["Could not find 'attention/foo'", "gqa", "mha", "mla"],
    ),
    "bad_head_count": (
        ["attention.n_kv_heads=3"],
        2,
        [
            "error: model.n_heads=4 is not divisible by attention.n_kv_heads=3; "
            "valid n_kv_heads: 1, 2, 4."
        ],
    ),
    "empty_corpus": (
        ["data=text_files", "data.patterns=[/nonexistent/*.txt]"],
        2,
        ["error: data.patterns entry '/nonexistent/*.txt' matches no files"],
    ),
}


@pytest.fixture(scope="module")
def cli_results(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, tuple[subprocess.CompletedProcess, Path]]]:
    """Run every CLI case at once (in parallel: most of each one's time is Python imports)."""
    procs = {}
    for name, (args, _, _) in CLI_CASES.items():
        cwd = tmp_path_factory.mktemp(name)
        full = [
            *args,
            f"cache_dir={cwd / 'cache'}",
            "trainer.progress=false",
        ]
        procs[name] = (
            subprocess.Popen(
                [sys.executable, "-m", "gpt5_ablate", *full],
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=cli_env(),
            ),
            cwd,
        )
    results = {}
    for name, (proc, cwd) in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, out, err), cwd)
    yield results
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()


@pytest.mark.integration
@pytest.mark.parametrize("name", list(CLI_CASES))
def test_cli_reports_bad_input_without_a_traceback(
    name: str, cli_results: dict[str, tuple[subprocess.CompletedProcess, Path]]
) -> None:
    _, status, texts = CLI_CASES[name]
    proc, cwd = cli_results[name]
    err = proc.stderr
    assert proc.returncode == status, err[-3000:]
    for text in texts:
        assert text in err, err[-3000:]
    assert "Traceback" not in err
    if status == 2:  # our own error: one line, after any log output
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, err
    assert not (cwd / "mlflow.db").exists()  # no store, no run
    assert not list(cwd.glob("outputs/**/checkpoints"))
    assert cache_leftovers(cwd / "cache") == []
