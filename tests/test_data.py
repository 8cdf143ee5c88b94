"""The data pipeline: corpora, tokenizers, the token cache, the batch loader and the baseline.

Corpora are cut down with ``max_docs`` and every cache lives in a temporary directory, so the
file runs in well under a minute on 2 CPU cores and never touches the network.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import gpt5_ablate.data.blocks as blocks_module
from gpt5_ablate.data import (
    DATA,
    TOKENIZER,
    BlockLoader,
    PreparedData,
    load_tokenizer,
    prepare_data,
    token_dtype,
    unigram_cross_entropy,
)
from gpt5_ablate.data.cache import MARKER
from gpt5_ablate.data.corpora import (
    StdlibConfig,
    StdlibCorpus,
    TextFilesConfig,
    is_stdlib_excluded,
    split_by_document,
)
from gpt5_ablate.data.hashing import stable_int
from gpt5_ablate.data.hub import probe_hub, require_hub
from gpt5_ablate.data.tokenizer import BPEConfig, ByteLevelBPE
from gpt5_ablate.errors import ConfigError, InputError

REPO_ROOT = Path(__file__).resolve().parents[1]
SEQ_LEN = 32
VOCAB = 512
EVAL_TOKENS = 1024
# Small: about 40 files of library source, enough text for a 512-token BPE and a few blocks.
SMALL_DATA = StdlibConfig(max_docs=40, val_fraction=0.2)
SMALL_BPE = BPEConfig(vocab_size=VOCAB)


@dataclass
class Prepared:
    data: PreparedData
    cache_dir: Path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    cache_dir = tmp_path_factory.mktemp("data_cache")
    data = prepare_data(SMALL_DATA, SMALL_BPE, SEQ_LEN, cache_dir, eval_tokens=EVAL_TOKENS)
    return Prepared(data, cache_dir)


def _small(cache_dir: Path) -> PreparedData:
    """A second, even smaller corpus for the tests that rebuild the cache several times."""
    return prepare_data(
        StdlibConfig(max_docs=16, val_fraction=0.25), BPEConfig(vocab_size=300), 16, cache_dir, 256
    )


def _no_temp_dirs(root: Path) -> bool:
    return not [p for p in root.rglob("*") if ".tmp-" in p.name]


# ----------------------------------------------------------------------------------------------
# Corpora


def test_stdlib_exclusion_rules() -> None:
    for excluded in (
        "test/test_os.py",
        "test/support/__init__.py",
        "unittest/test/test_case.py",
        "idlelib/idle_test/htest.py",
        "lib2to3/tests/data/bom.py",
        "site-packages/pip/__init__.py",
        "sqlite3/test_fake.py",
        "config-3.11-x86_64-linux-gnu/python-config.py",
        "_sysconfigdata__linux_x86_64-linux-gnu.py",
    ):
        assert is_stdlib_excluded(excluded), excluded
    for kept in ("json/decoder.py", "unittest/case.py", "os.py", "asyncio/tasks.py"):
        assert not is_stdlib_excluded(kept), kept


def test_stdlib_corpus_excludes_tests_and_site_packages() -> None:
    corpus = StdlibCorpus(StdlibConfig())
    files = corpus.source_files()
    assert "json/decoder.py" in files and "unittest/case.py" in files
    for rel in files:
        *dirs, filename = rel.split("/")
        assert not {"test", "tests", "idle_test", "site-packages"} & set(dirs), rel
        assert not filename.startswith("test_"), rel
    # The interpreter ships its test suite next to the library: the filter had work to do.
    if (corpus.root() / "test" / "test_os.py").is_file():
        assert "test/test_os.py" not in files


def test_stdlib_split_is_deterministic_disjoint_and_has_topics() -> None:
    first, second = StdlibCorpus(StdlibConfig()), StdlibCorpus(StdlibConfig())
    assert first.fingerprint() == second.fingerprint()
    train, val, test = first.keys("train"), first.keys("val"), first.keys("test")
    assert train == second.keys("train") and val == second.keys("val")
    assert test == second.keys("test")
    assert list(first.documents("val")) == list(second.documents("val"))
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    everything = [key for key, _ in first.read_documents()]
    assert sorted(train + val + test) == sorted(everything)
    assert len(set(everything)) == len(everything)
    assert any(key.startswith("pydoc_data.topics/") for key in everything)
    assert any(key.startswith("pydoc_data.topics/") for key in train)
    assert abs(len(val) / len(everything) - 0.05) < 0.01
    assert sum(len(text) for text in first.documents("train")) > 5_000_000  # the full ~12 MB


def test_split_uses_a_stable_hash() -> None:
    # Golden values: Python's hash() is salted per process, so any use of it would break these,
    # and with them the promise that every run and every process sees the same split.
    assert stable_int("stdlib/os.py") == 13596692939586108179
    keys = [f"doc{i}" for i in range(10)]
    held_out = split_by_document(keys, 0.3, "test")
    assert [i for i, label in enumerate(held_out) if label == "val"] == [2, 4, 5]
    assert split_by_document(list(reversed(keys)), 0.3, "test") == list(reversed(held_out))


def test_text_files_corpus(tmp_path: Path) -> None:
    for i in range(8):
        (tmp_path / f"doc{i}.txt").write_text(f"Document number {i}. " * 40)
    out = prepare_data(
        TextFilesConfig(patterns=[str(tmp_path / "*.txt")], val_fraction=0.25),
        BPEConfig(vocab_size=300),
        8,
        tmp_path / "cache",
        eval_tokens=64,
    )
    # 8 documents: round(0.25 * 8) = 2 validation, max(1, round(0.05 * 8)) = 1 test.
    assert out.stats["n_docs_train"] == 5 and out.stats["n_docs_val"] == 2
    assert out.stats["n_docs_test"] == 1
    assert out.tokenizer.decode(out.train_blocks[0]).startswith("Document number")


# ----------------------------------------------------------------------------------------------
# Tokenizer


def test_tokenizer_round_trips_and_reloads(prepared: Prepared) -> None:
    tok, tokenizer_dir = prepared.data.tokenizer, prepared.data.tokenizer_dir
    text = (
        'def grüße(name: str) -> str:\n    """Say hello — 世界 🐍."""\n'
        "\treturn f'héllo {name} .' , x  +  1\r\n\n"
    )
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert len(tok) == VOCAB == prepared.data.vocab_size
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == prepared.data.eos_token_id
    # Real files on disk, loadable without the corpus (this is what checkpoints copy).
    assert (tokenizer_dir / "tokenizer.json").stat().st_size > 1000
    assert tokenizer_dir.parent.parent == prepared.cache_dir
    reloaded = load_tokenizer(tokenizer_dir)
    assert reloaded.encode(text, add_special_tokens=False) == ids
    assert reloaded.decode(ids) == text


def test_vocab_size_too_small_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"vocab_size=100 .*257"):
        prepare_data(SMALL_DATA, BPEConfig(vocab_size=100), SEQ_LEN, tmp_path)
    assert not any(tmp_path.iterdir())  # rejected before anything was built


# ----------------------------------------------------------------------------------------------
# Cache


def test_second_call_loads_the_cache(prepared: Prepared, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("tokenized or trained again despite a cached entry")

    monkeypatch.setattr(blocks_module, "tokenize_split", forbidden)
    monkeypatch.setattr(ByteLevelBPE, "build", forbidden)
    # A DictConfig-like plain mapping must land on the same key as the dataclass.
    again = prepare_data(
        {"name": "stdlib", "max_docs": 40, "val_fraction": 0.2},
        {"name": "bpe", "vocab_size": VOCAB},
        SEQ_LEN,
        prepared.cache_dir,
        eval_tokens=EVAL_TOKENS,
    )
    assert prepared.data.tokenized_now and not again.tokenized_now
    assert again.cache_path == prepared.data.cache_path
    assert again.tokenizer_dir == prepared.data.tokenizer_dir
    np.testing.assert_array_equal(again.train_blocks, prepared.data.train_blocks)
    np.testing.assert_array_equal(again.val_blocks, prepared.data.val_blocks)
    assert isinstance(again.train_blocks, np.memmap)  # loaded lazily, not read into memory


def test_seq_len_changes_the_cache_key(prepared: Prepared) -> None:
    other = prepare_data(SMALL_DATA, SMALL_BPE, 16, prepared.cache_dir, eval_tokens=EVAL_TOKENS)
    assert other.cache_path != prepared.data.cache_path
    assert other.tokenized_now and other.train_blocks.shape[1] == 17
    assert other.tokenizer_dir == prepared.data.tokenizer_dir  # the tokenizer does not depend on it


def test_corrupt_cache_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = _small(tmp_path)
    train, val = np.array(good.train_blocks), np.array(good.val_blocks)
    entry = good.cache_path

    def check_rebuilt(tokenized: bool = True) -> None:
        rebuilt = _small(tmp_path)
        assert rebuilt.tokenized_now == tokenized
        np.testing.assert_array_equal(rebuilt.train_blocks, train)
        np.testing.assert_array_equal(rebuilt.val_blocks, val)
        assert _no_temp_dirs(tmp_path)

    (entry / MARKER).unlink()  # an interrupted build: files but no marker
    check_rebuilt()
    with open(entry / "train.npy", "r+b") as f:  # a truncated file
        f.truncate(f.seek(0, os.SEEK_END) // 2)
    caplog.clear()
    check_rebuilt()
    assert str(entry) in caplog.text and "train.npy" in caplog.text
    with open(entry / "val.npy", "r+b") as f:  # garbled content, same size
        f.write(b"\0" * 16)
    check_rebuilt()
    (good.tokenizer_dir / "tokenizer.json").unlink()  # a damaged tokenizer entry
    caplog.clear()
    # BPE training is deterministic: the retrained tokenizer has the same files, hence the same
    # block key, so the blocks need no new tokenization.
    check_rebuilt(tokenized=False)
    assert str(good.tokenizer_dir) in caplog.text
    assert (good.tokenizer_dir / "tokenizer.json").is_file()


def test_concurrent_builds_of_one_key(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import hashlib, json, numpy as np
        from gpt5_ablate.data import prepare_data
        from gpt5_ablate.data.corpora import StdlibConfig
        from gpt5_ablate.data.tokenizer import BPEConfig
        p = prepare_data(StdlibConfig(max_docs=12, val_fraction=0.25), BPEConfig(vocab_size=300),
                         16, {str(tmp_path)!r}, eval_tokens=256)
        digest = hashlib.sha256(np.ascontiguousarray(p.train_blocks).tobytes()
                                + p.val_blocks.tobytes()).hexdigest()
        print(json.dumps({{"built": p.tokenized_now, "digest": digest, "path": str(p.cache_path)}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TOKENIZERS_PARALLELISM": "false"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr.decode()
        outputs.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    assert outputs[0]["digest"] == outputs[1]["digest"]
    assert outputs[0]["path"] == outputs[1]["path"]
    # The lock makes exactly one of them build; the other loads what it wrote.
    assert sorted(o["built"] for o in outputs) == [False, True]
    assert _no_temp_dirs(tmp_path)


# ----------------------------------------------------------------------------------------------
# Blocks and loader


def test_blocks_are_packed_documents(prepared: Prepared) -> None:
    data = prepared.data
    train, val = data.train_blocks, data.val_blocks
    assert train.ndim == 2 and train.shape[1] == SEQ_LEN + 1 and train.dtype == np.uint16
    assert val.shape == (data.stats["n_val_blocks"], SEQ_LEN + 1)  # the whole validation split
    assert data.eval_blocks.shape == (EVAL_TOKENS // SEQ_LEN, SEQ_LEN + 1)
    assert int(train.max()) < data.vocab_size and int(val.max()) < data.vocab_size
    assert data.stats["n_train_blocks"] == data.stats["n_train_tokens"] // (SEQ_LEN + 1)
    # Blocks are the training documents, in order, each followed by EOS.
    corpus = StdlibCorpus(SMALL_DATA)
    first_doc = next(corpus.documents("train"))
    first_ids = data.tokenizer.encode(first_doc, add_special_tokens=False)
    flat = train.reshape(-1)
    eos_positions = np.flatnonzero(flat == data.eos_token_id)
    assert eos_positions[0] == len(first_ids)
    np.testing.assert_array_equal(flat[: len(first_ids)], first_ids)


def test_token_dtype_is_compact() -> None:
    assert token_dtype(8192) == np.uint16 and token_dtype(2**16) == np.uint16  # ids <= 65535
    assert token_dtype(2**16 + 1) == np.int32  # e.g. a 128k-token hub tokenizer


def test_loader_targets_are_shifted_inputs(prepared: Prepared) -> None:
    loader = BlockLoader(prepared.data.train_blocks, batch_size=4, seed=0)
    inputs, targets = loader.next_batch()
    assert inputs.shape == targets.shape == (4, SEQ_LEN)
    assert inputs.dtype == targets.dtype == torch.int64
    assert torch.equal(inputs[:, 1:], targets[:, :-1])


def test_loader_resume_and_epochs() -> None:
    blocks = np.arange(10 * 5, dtype=np.uint16).reshape(10, 5)
    loader = BlockLoader(blocks, batch_size=3, seed=7)
    inputs, targets = loader.next_batch()
    rows = [int(r) for r in inputs[:, 0] // 5]
    np.testing.assert_array_equal(inputs.numpy(), blocks[rows, :-1])
    np.testing.assert_array_equal(targets.numpy(), blocks[rows, 1:])

    for _ in range(4):
        loader.next_batch()
    state = loader.state_dict()
    expected = [loader.next_batch() for _ in range(6)]
    resumed = BlockLoader(blocks, batch_size=3, seed=0)  # the seed comes from the state
    resumed.load_state_dict(json.loads(json.dumps(state)))  # survives serialisation
    for (x, y), (rx, ry) in zip(expected, [resumed.next_batch() for _ in range(6)], strict=True):
        assert torch.equal(x, rx) and torch.equal(y, ry)

    # Each epoch is a full permutation, and a different one.
    epochs = BlockLoader(blocks, batch_size=5, seed=0)
    orders = [np.concatenate([epochs.next_indices() for _ in range(2)]) for _ in range(3)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(10))
    assert len({tuple(order.tolist()) for order in orders}) == 3
    assert epochs.state_dict()["epoch"] == 3

    with pytest.raises(InputError, match="changed"):
        BlockLoader(blocks[:9], batch_size=3).load_state_dict(state)


# ----------------------------------------------------------------------------------------------
# Bad input


def test_hub_datasets_fail_fast_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the offline path must not open a connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    for name in ("tinystories", "fineweb_edu"):
        start = time.perf_counter()
        with pytest.raises(InputError, match=rf"data={name}") as error:
            prepare_data({"name": name}, {"name": "bpe"}, SEQ_LEN, tmp_path)
        assert time.perf_counter() - start < 5
        assert "HF_HUB_OFFLINE" in str(error.value) and "data=stdlib" in str(error.value)
    with pytest.raises(InputError, match="no-such-tokenizer"):
        prepare_data(
            SMALL_DATA,
            {"name": "hub", "pretrained_name": "gpt5-ablate-tests/no-such-tokenizer"},
            SEQ_LEN,
            tmp_path,
        )
    assert _no_temp_dirs(tmp_path)


def test_hub_probe_reports_an_unreachable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    # A local port nobody listens on: the probe fails at once without leaving the machine.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert f"127.0.0.1:{port}" in (probe_hub(timeout=2.0) or "")
    with pytest.raises(InputError, match="data=tinystories needs internet access"):
        require_hub("data=tinystories", timeout=2.0)


def test_unknown_names_and_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Unknown data 'nope'") as error:
        prepare_data({"name": "nope"}, {"name": "bpe"}, SEQ_LEN, tmp_path)
    assert all(name in str(error.value) for name in DATA.names())
    with pytest.raises(ConfigError, match="Unknown tokenizer 'nope'") as error:
        prepare_data({"name": "stdlib"}, {"name": "nope"}, SEQ_LEN, tmp_path)
    assert all(name in str(error.value) for name in TOKENIZER.names())
    with pytest.raises(ConfigError, match="seq_len=0"):
        prepare_data(SMALL_DATA, SMALL_BPE, 0, tmp_path)
    with pytest.raises(ConfigError, match=r"val_fraction=0\.0"):
        prepare_data(StdlibConfig(val_fraction=0.0), SMALL_BPE, SEQ_LEN, tmp_path)
    with pytest.raises(ConfigError, match="max_doc"):  # a typo'd key lists the valid ones
        prepare_data({"name": "stdlib", "max_doc": 3}, SMALL_BPE, SEQ_LEN, tmp_path)
    with pytest.raises(InputError, match="max_docs=0"):
        prepare_data(StdlibConfig(max_docs=0), SMALL_BPE, SEQ_LEN, tmp_path)
    pattern = str(tmp_path / "nothing" / "*.txt")
    with pytest.raises(InputError, match="matches no files") as error:
        prepare_data(TextFilesConfig(patterns=[pattern]), SMALL_BPE, SEQ_LEN, tmp_path)
    assert pattern in str(error.value)
    assert not any(tmp_path.iterdir())  # all rejected before anything was built


def test_validation_split_smaller_than_a_block(tmp_path: Path) -> None:
    for i in range(4):
        (tmp_path / f"note{i}.txt").write_text(f"note {i}")
    with pytest.raises(InputError, match=r"validation split .* fewer than one block"):
        prepare_data(
            TextFilesConfig(patterns=[str(tmp_path / "*.txt")]),
            BPEConfig(vocab_size=300),
            64,
            tmp_path / "cache",
        )
    assert _no_temp_dirs(tmp_path)


# ----------------------------------------------------------------------------------------------
# Baseline and config files


def test_unigram_cross_entropy_hand_computed() -> None:
    # Train counts over all tokens: 0 -> 2, 1 -> 1, 2 -> 0; add-one over V=3 and N=3 gives
    # p = (3/6, 2/6, 1/6). Validation targets are block[1:] = [0, 2].
    train = np.array([[0, 0, 1]], dtype=np.uint16)
    val = np.array([[2, 0, 2]], dtype=np.uint16)
    expected = -(math.log(3 / 6) + math.log(1 / 6)) / 2
    assert unigram_cross_entropy(train, val, 3) == pytest.approx(expected, rel=1e-12)
    assert unigram_cross_entropy(torch.from_numpy(train.astype(np.int64)), val, 3) == (
        pytest.approx(expected, rel=1e-12)
    )


def test_beats_uniform_baseline(prepared: Prepared) -> None:
    data = prepared.data
    loss = unigram_cross_entropy(data.train_blocks, data.val_blocks, data.vocab_size)
    assert 0 < loss < math.log(data.vocab_size)  # token frequencies carry information


@pytest.mark.parametrize(
    ("group", "option"),
    [
        ("data", "stdlib"),
        ("data", "text_files"),
        ("data", "tinystories"),
        ("data", "fineweb_edu"),
        ("data", "python_sources"),
        ("data", "token_files"),
        ("tokenizer", "bpe"),
        ("tokenizer", "hub"),
    ],
)
def test_yaml_defaults_match_the_dataclasses(group: str, option: str) -> None:
    registry = {"data": DATA, "tokenizer": TOKENIZER}[group]
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name=None, overrides=[f"+{group}={option}"])
    typed = registry.typed(cfg[group])
    assert typed == registry.entry(option).config_class()
