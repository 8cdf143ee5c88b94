"""Data pipeline: corpora, tokenizers, tokenize + pack + cache, the eval sets and the loader.

Importing this package registers every ``data=...`` and ``tokenizer=...`` option (and stores
their schemas in Hydra's ConfigStore), so it must be imported before Hydra composes a config.

    from gpt5_ablate.data import prepare_data, BlockLoader, unigram_cross_entropy
    prepared = prepare_data(cfg.data, cfg.tokenizer, seq_len=128, cache_dir=cfg.cache_dir)
    loader = BlockLoader(prepared.train_blocks, batch_size=16, seed=cfg.seed, device=device)
    inputs, targets = loader.next_batch()
    # prepared.eval_blocks: the periodic eval set; prepared.val_blocks with
    # prepared.val_block_doc_ids / val_doc_names: the whole validation split, per document.
    # prepared.test_blocks / test_block_doc_ids / test_doc_names: the same for the test split.
"""

from gpt5_ablate.data import corpora, tokenizer  # noqa: F401  (registers the options)
from gpt5_ablate.data.blocks import token_dtype
from gpt5_ablate.data.corpora import Corpus
from gpt5_ablate.data.loader import BlockLoader, iterate_blocks, unigram_cross_entropy
from gpt5_ablate.data.prepare import PreparedData, prepare_data
from gpt5_ablate.data.registry import DATA, TOKENIZER, DataContext
from gpt5_ablate.data.tokenizer import TokenizerBuilder, load_tokenizer

__all__ = [
    "DATA",
    "TOKENIZER",
    "BlockLoader",
    "Corpus",
    "DataContext",
    "PreparedData",
    "TokenizerBuilder",
    "iterate_blocks",
    "load_tokenizer",
    "prepare_data",
    "token_dtype",
    "unigram_cross_entropy",
]
