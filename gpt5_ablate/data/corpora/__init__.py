"""Corpora: where the documents come from and how they split into train and validation.

One module per ``data=<name>`` option, discovered on import (a new module needs no list):

- ``stdlib``: the running interpreter's standard library plus the pydoc topics (offline default);
- ``text_files``: the user's own files, selected by glob patterns;
- ``python_sources``: the ``.py`` files of installed packages (offline, up to ~350 MB);
- ``token_files``: pre-tokenized ``.bin`` shards (llm.c / modded-nanogpt layout);
- ``tinystories`` / ``fineweb_edu``: Hugging Face datasets (internet needed once).
"""

from gpt5_ablate.data.corpora.base import (
    Corpus,
    LocalCorpus,
    LocalCorpusConfig,
    TextCorpus,
    TokenCorpus,
)
from gpt5_ablate.data.corpora.hub import FineWebEduConfig, TinyStoriesConfig
from gpt5_ablate.data.corpora.python_sources import PythonSourcesConfig, PythonSourcesCorpus
from gpt5_ablate.data.corpora.stdlib import StdlibConfig, StdlibCorpus, is_stdlib_excluded
from gpt5_ablate.data.corpora.text_files import TextFilesConfig, TextFilesCorpus
from gpt5_ablate.data.corpora.token_files import TokenFilesConfig, TokenFilesCorpus, read_shard
from gpt5_ablate.data.split import split_by_document, split_by_group
from gpt5_ablate.registry import discover

discover(__name__)  # any further corpus module registers itself too

__all__ = [
    "Corpus",
    "FineWebEduConfig",
    "LocalCorpus",
    "LocalCorpusConfig",
    "PythonSourcesConfig",
    "PythonSourcesCorpus",
    "StdlibConfig",
    "StdlibCorpus",
    "TextCorpus",
    "TextFilesConfig",
    "TextFilesCorpus",
    "TinyStoriesConfig",
    "TokenCorpus",
    "TokenFilesConfig",
    "TokenFilesCorpus",
    "is_stdlib_excluded",
    "read_shard",
    "split_by_document",
    "split_by_group",
]
