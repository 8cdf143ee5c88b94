"""``data=text_files``: the user's own text files, selected by glob patterns."""

from __future__ import annotations

import glob
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpt5_ablate.data.corpora.base import LocalCorpus, LocalCorpusConfig, check_patterns
from gpt5_ablate.data.registry import DATA
from gpt5_ablate.errors import ConfigError, InputError


def match_files(patterns: list[str], key: str) -> list[Path]:
    """Files matched by the glob ``patterns``, sorted and de-duplicated; InputError naming the
    first pattern (config key ``data.<key>``) that matches nothing."""
    matched: dict[str, Path] = {}
    for pattern in patterns:
        paths = [
            Path(p)
            for p in glob.glob(os.path.expanduser(pattern), recursive=True)
            if os.path.isfile(p)
        ]
        if not paths:
            raise InputError(
                f"data.{key} entry {pattern!r} matches no files (resolved from the working "
                f"directory {os.getcwd()}); check the path, quote the pattern on the command "
                "line so the shell does not expand it, and use '**' to search sub-directories."
            )
        for path in paths:
            matched.setdefault(str(path.resolve()), path)
    return [matched[resolved] for resolved in sorted(matched)]


@dataclass
class TextFilesConfig(LocalCorpusConfig):
    name: str = "text_files"
    # Glob patterns ("**" recurses); relative patterns are resolved against the working directory.
    patterns: list[str] = field(default_factory=lambda: ["data/**/*.txt"])
    # None: each file is one document. Otherwise each file is cut into documents at this string.
    doc_separator: str | None = None
    encoding: str = "utf-8"
    encoding_errors: str = "strict"  # "replace" to accept files with invalid bytes
    # Numbered names (notes-2024-01-02.md, part_001.txt) are usually unrelated texts here.
    group_numbered_files: bool = False

    def validate(self, ctx: Any = None) -> None:
        super().validate(ctx)
        check_patterns(self.name, "patterns", self.patterns)
        if self.doc_separator == "":
            raise ConfigError("data.doc_separator='' is invalid: use null or a non-empty string.")
        match_files(self.patterns, "patterns")  # a pattern matching nothing is worth reporting now


@DATA.register("text_files", TextFilesConfig)
class TextFilesCorpus(LocalCorpus):
    """Local text files matched by glob patterns; one document per file (or per separator)."""

    cfg: TextFilesConfig

    def files(self) -> list[Path]:
        return match_files(self.cfg.patterns, "patterns")

    def _fingerprint_payload(self) -> Any:
        # Size and modification time stand in for the content, so a cache hit reads no file.
        stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in self.files()]
        return {"cfg": asdict(self.cfg), "files": stats}

    def read_documents(self) -> list[tuple[str, str]]:
        docs: list[tuple[str, str]] = []
        for path in self.files():
            try:
                text = path.read_text(encoding=self.cfg.encoding, errors=self.cfg.encoding_errors)
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{path} is not valid {self.cfg.encoding} ({exc.reason} at byte {exc.start}); "
                    "set data.encoding to the file's encoding or data.encoding_errors=replace."
                ) from exc
            if self.cfg.doc_separator is None:
                pieces = [text]
            else:
                pieces = text.split(self.cfg.doc_separator)
            docs += [(f"{path}#{i}", piece) for i, piece in enumerate(pieces) if piece.strip()]
            if self.cfg.max_docs is not None and len(docs) >= self.cfg.max_docs:
                docs = docs[: self.cfg.max_docs]
                break
        if not docs:
            raise InputError(
                f"data=text_files found only empty documents in {len(self.files())} file(s) "
                f"matched by {list(self.cfg.patterns)}."
            )
        return docs
