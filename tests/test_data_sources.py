"""``data=python_sources`` (installed packages' sources) and ``data=token_files`` (llm.c-style
pre-tokenized shards). Shards are written here with numpy in the exact on-disk layout."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import gpt5_ablate.data.corpora.python_sources as python_sources
from gpt5_ablate.data import prepare_data
from gpt5_ablate.data.corpora import (
    PythonSourcesConfig,
    PythonSourcesCorpus,
    TokenFilesConfig,
    TokenFilesCorpus,
    read_shard,
)
from gpt5_ablate.errors import ConfigError, InputError

SEQ_LEN = 16

# ----------------------------------------------------------------------------------------------
# python_sources


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site-packages with package ``alpha`` (nested, with a cache dir and a big file) and the
    single-module package ``beta``."""
    site = tmp_path / "site-packages"
    (site / "alpha" / "sub").mkdir(parents=True)
    (site / "alpha" / "__pycache__").mkdir()
    (site / "alpha" / "__init__.py").write_text("")  # empty: skipped
    (site / "alpha" / "core.py").write_text("def core():\n    return 1\n")
    (site / "alpha" / "sub" / "util.py").write_text("def util():\n    return 2\n")
    (site / "alpha" / "big_table.py").write_text("TABLE = [\n" + "    0,\n" * 2000 + "]\n")
    (site / "alpha" / "__pycache__" / "core.cpython-311.py").write_text("cached = True\n")
    (site / "alpha" / "notes.txt").write_text("not python\n")
    (site / "beta.py").write_text("BETA = 'b'\n")
    (site / "alpha-1.0.dist-info").mkdir()
    monkeypatch.setattr(python_sources, "site_roots", lambda: [site])
    return site


def test_python_sources_lists_files_in_a_fixed_order(fake_site: Path) -> None:
    corpus = PythonSourcesCorpus(PythonSourcesConfig(max_file_bytes=1000))
    assert [key for key, _ in corpus.source_files()] == [
        "alpha/core.py",
        "alpha/sub/util.py",
        "beta.py",
    ]
    only_beta = PythonSourcesCorpus(PythonSourcesConfig(packages=["beta"]))
    assert [key for key, _ in only_beta.source_files()] == ["beta.py"]
    everything = PythonSourcesCorpus(PythonSourcesConfig(max_file_bytes=None))
    assert "alpha/big_table.py" in [key for key, _ in everything.source_files()]


def test_python_sources_fingerprint_follows_the_files(fake_site: Path) -> None:
    def fingerprint() -> str:
        return PythonSourcesCorpus(PythonSourcesConfig(packages=["alpha"])).fingerprint()

    before = fingerprint()
    assert fingerprint() == before
    (fake_site / "beta.py").write_text("BETA = 'changed, but not in alpha'\n")
    assert fingerprint() == before
    (fake_site / "alpha" / "core.py").write_text("def core():\n    return 100\n")
    assert fingerprint() != before


def test_unknown_package_fails_in_validate(fake_site: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError) as error:
        prepare_data({"name": "python_sources", "packages": ["gamma"]}, {"name": "bpe"}, 8, cache)
    message = str(error.value)
    assert "data.packages entry 'gamma'" in message and "alpha, beta" in message
    assert "\n" not in message
    assert not cache.exists()  # refused before anything was read or built
    with pytest.raises(ConfigError, match="max_file_bytes=0"):
        PythonSourcesCorpus(PythonSourcesConfig(max_file_bytes=0)).validate()


def test_python_sources_prepares_installed_packages(tmp_path: Path) -> None:
    cfg = {"name": "python_sources", "packages": ["filelock", "tqdm"], "val_fraction": 0.1}
    data = prepare_data(cfg, {"name": "bpe", "vocab_size": 300}, SEQ_LEN, tmp_path, 256)
    names = data.val_doc_names
    assert names and all(n.startswith(("filelock/", "tqdm/")) and n.endswith(".py") for n in names)
    assert data.stats["n_docs_train"] > 20 and data.stats["n_train_blocks"] > 100
    assert 0.0 <= data.stats["val_train_overlap_32"] <= 1.0
    assert data.stats["split"]["n_groups"] <= data.stats["n_docs_train"] + len(names)


# ----------------------------------------------------------------------------------------------
# token_files


def write_shard(path: Path, tokens: np.ndarray, magic: int = 20240520, version: int = 1) -> Path:
    """The llm.c layout: 256 little-endian int32 of header, then uint16 tokens."""
    header = np.zeros(256, dtype="<i4")
    header[0], header[1], header[2] = magic, version, len(tokens)
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes())
    return path


def make_tokenizer(directory: Path, vocab_size: int) -> Path:
    """A word-level tokenizer with ``vocab_size`` ids (the last one EOS), saved like a hub one."""
    vocab = {f"w{i}": i for i in range(vocab_size - 1)} | {"<|endoftext|>": vocab_size - 1}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>").save_pretrained(
        str(directory)
    )
    return directory


VOCAB = 1000


@pytest.fixture(scope="module")
def local_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = make_tokenizer(tmp_path_factory.mktemp("tokenizer"), VOCAB)
    return {"name": "hub", "pretrained_name": str(directory)}


@pytest.fixture
def shards(tmp_path: Path) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    train = [rng.integers(0, VOCAB, size=n).astype(np.uint16) for n in (3000, 1700)]
    # The second validation shard repeats a stretch of training text: a planted leak.
    val = [rng.integers(0, VOCAB, size=700).astype(np.uint16), train[0][:320].copy()]
    for i, tokens in enumerate(train):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", tokens)
    for i, tokens in enumerate(val):
        write_shard(tmp_path / f"fineweb_val_{i:06d}.bin", tokens)
    return {"train": train, "val": val}


def _config(root: Path) -> dict[str, object]:
    return {
        "name": "token_files",
        "train_patterns": [str(root / "fineweb_train_*.bin")],
        "val_patterns": [str(root / "fineweb_val_*.bin")],
    }


def test_token_files_blocks_are_the_shards(
    tmp_path: Path,
    shards: dict[str, list[np.ndarray]],
    local_tokenizer: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = prepare_data(_config(tmp_path), local_tokenizer, SEQ_LEN, tmp_path / "cache", 64)
    block = SEQ_LEN + 1
    # Without test_patterns the validation stream (700 + 320 tokens) is cut in half: the first
    # 510 tokens stay validation, the last 510 (190 of shard 0, all of shard 1) are the test.
    val_stream = np.concatenate(shards["val"])
    halves = {"train": np.concatenate(shards["train"]), "val": val_stream[:510]}
    halves["test"] = val_stream[510:]
    for blocks, split in (
        (data.train_blocks, "train"),
        (data.val_blocks, "val"),
        (data.test_blocks, "test"),
    ):
        stream = halves[split]
        assert blocks.shape == (len(stream) // block, block) and blocks.dtype == np.uint16
        np.testing.assert_array_equal(blocks.reshape(-1), stream[: blocks.size])
    names = [str(tmp_path / f"fineweb_val_{i:06d}.bin") for i in range(2)]
    assert data.val_doc_names == names[:1] and data.test_doc_names == names
    assert not data.val_block_doc_ids.any()
    expected = np.repeat([0, 1], [190, 320])[: data.test_blocks.size].reshape(-1, block)[:, 1:]
    np.testing.assert_array_equal(data.test_block_doc_ids, expected)
    assert data.stats["n_docs_train"] == 2 and data.vocab_size == VOCAB
    # Windows start every 32 tokens; of the 15 test windows the 9 inside the planted copy
    # (test tokens 190 to 509) are found in training; the random validation half has none.
    assert data.stats["test_train_overlap_32"] == pytest.approx(9 / 15)
    assert data.stats["val_train_overlap_32"] == 0.0
    assert data.stats["test_val_overlap_32"] == 0.0
    assert data.eval_blocks.shape == (64 // SEQ_LEN, block)

    def forbidden(self: TokenFilesCorpus, split: str) -> None:
        raise AssertionError("the shards were read again despite a cached entry")

    monkeypatch.setattr(TokenFilesCorpus, "streams", forbidden)
    again = prepare_data(_config(tmp_path), local_tokenizer, SEQ_LEN, tmp_path / "cache", 64)
    assert not again.tokenized_now and isinstance(again.train_blocks, np.memmap)
    np.testing.assert_array_equal(again.eval_blocks, data.eval_blocks)


def test_token_files_test_patterns_name_the_test_shards(
    tmp_path: Path, shards: dict[str, list[np.ndarray]], local_tokenizer: dict[str, str]
) -> None:
    test = np.arange(300, dtype=np.uint16)
    write_shard(tmp_path / "held_out_000000.bin", test)
    cfg = {**_config(tmp_path), "test_patterns": [str(tmp_path / "held_out_*.bin")]}
    data = prepare_data(cfg, local_tokenizer, SEQ_LEN, tmp_path / "cache", 64)
    val_stream = np.concatenate(shards["val"])  # validation keeps every one of its shards
    np.testing.assert_array_equal(data.val_blocks.reshape(-1), val_stream[: data.val_blocks.size])
    np.testing.assert_array_equal(data.test_blocks.reshape(-1), test[: data.test_blocks.size])
    assert data.test_doc_names == [str(tmp_path / "held_out_000000.bin")]
    overlapping = {**cfg, "test_patterns": [str(tmp_path / "fineweb_val_000001.bin")]}
    with pytest.raises(ConfigError, match="a shard must be in one split only"):
        prepare_data(overlapping, local_tokenizer, SEQ_LEN, tmp_path / "cache", 64)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("magic", r"is not a token shard: magic number 12345, expected 20240520"),
        ("version", r"is a version 2 token shard"),
        ("truncated", r"is truncated: its header announces 500 tokens but it holds 499"),
        ("trailing", r"has 4 bytes after the 500 tokens"),
        ("tiny", r"shorter than the 1024-byte header"),
    ],
)
def test_damaged_shards_are_named(tmp_path: Path, damage: str, message: str) -> None:
    tokens = np.arange(500, dtype=np.uint16)
    path = tmp_path / "shard.bin"
    if damage == "magic":
        write_shard(path, tokens, magic=12345)
    elif damage == "version":
        write_shard(path, tokens, version=2)
    else:
        write_shard(path, tokens)
        data = path.read_bytes()
        path.write_bytes(
            {"truncated": data[:-2], "trailing": data + b"\0" * 4, "tiny": data[:100]}[damage]
        )
    with pytest.raises(InputError, match=message) as error:
        read_shard(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_damaged_shard_fails_prepare(
    tmp_path: Path, shards: dict[str, list[np.ndarray]], local_tokenizer: dict[str, str]
) -> None:
    bad = tmp_path / "fineweb_train_000001.bin"
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(InputError, match=re.escape(f"{bad} is truncated")):
        prepare_data(_config(tmp_path), local_tokenizer, SEQ_LEN, tmp_path / "cache")


def test_token_files_refuse_wrong_tokenizers_and_patterns(
    tmp_path: Path, shards: dict[str, list[np.ndarray]], local_tokenizer: dict[str, str]
) -> None:
    cfg, cache = _config(tmp_path), tmp_path / "cache"
    with pytest.raises(ConfigError, match=r"tokenizer=bpe .* tokenizer=hub"):
        prepare_data(cfg, {"name": "bpe"}, SEQ_LEN, cache)
    with pytest.raises(InputError, match=r"train_patterns entry .* matches no files"):
        prepare_data(
            {**cfg, "train_patterns": [str(tmp_path / "nope*.bin")]}, local_tokenizer, 8, cache
        )
    with pytest.raises(ConfigError, match="matches both"):
        prepare_data({**cfg, "val_patterns": [str(tmp_path / "*.bin")]}, local_tokenizer, 8, cache)
    assert not cache.exists()
    # Ids beyond the tokenizer's vocabulary: the shards were made with another tokenizer.
    small = {"name": "hub", "pretrained_name": str(make_tokenizer(tmp_path / "small", 500))}
    with pytest.raises(InputError, match=r"token id 9\d\d, outside .* \[0, 500\)"):
        prepare_data(cfg, small, SEQ_LEN, cache)
    # A vocabulary too large for uint16 ids cannot be the shards' tokenizer.
    large = {"name": "hub", "pretrained_name": str(make_tokenizer(tmp_path / "large", 70_000))}
    with pytest.raises(InputError, match="at most 65536 tokens"):
        prepare_data(cfg, large, SEQ_LEN, cache)


def test_max_train_shards(tmp_path: Path, shards: dict[str, list[np.ndarray]]) -> None:
    cfg = TokenFilesConfig(**{**_config(tmp_path), "max_train_shards": 1})
    corpus = TokenFilesCorpus(cfg)
    assert [Path(name).name for name, _ in corpus.streams("train")] == ["fineweb_train_000000.bin"]
    with pytest.raises(ConfigError, match="max_train_shards=0"):
        TokenFilesConfig(**{**_config(tmp_path), "max_train_shards": 0}).validate()
