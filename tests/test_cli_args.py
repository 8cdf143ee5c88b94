"""The key=value parser of generate and report: values arrive exactly as a shell passes them."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from gpt5_ablate.cli_args import HelpRequested
from gpt5_ablate.errors import ConfigError, InputError
from gpt5_ablate.generate import parse_args


@pytest.mark.parametrize(
    ("typed", "prompt"),
    [
        ('prompt="def fib(n):"', "def fib(n):"),
        ('prompt="import "', "import "),
        ("prompt='say \"hi\": {a: 1}'", 'say "hi": {a: 1}'),
        ("prompt=$'line one\\nline two'", "line one\nline two"),
        ("prompt=a=b=c", "a=b=c"),
    ],
)
def test_prompts_pass_through_unchanged(typed: str, prompt: str) -> None:
    argv = (
        shlex.split(f"checkpoint=x {typed}")
        if "$'" not in typed
        else ["checkpoint=x", f"prompt={prompt}"]
    )
    assert parse_args(argv).prompt == prompt


def test_prompt_file_is_read_as_is(tmp_path: Path) -> None:
    path = tmp_path / "prompt.txt"
    path.write_text("def main():\n    ")
    assert parse_args(["checkpoint=x", f"prompt_file={path}"]).prompt == "def main():\n    "
    with pytest.raises(InputError, match="prompt_file="):
        parse_args(["checkpoint=x", f"prompt_file={tmp_path / 'missing.txt'}"])


def test_bad_keys_and_values_name_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"Unknown key 'temprature'.*temperature"):
        parse_args(["checkpoint=x", "temprature=0.5"])
    with pytest.raises(ConfigError, match="top_k='many' is not an integer"):
        parse_args(["checkpoint=x", "top_k=many"])


def test_cfg_job_and_help_print_instead_of_running() -> None:
    with pytest.raises(HelpRequested, match="prompt: 'def fib\\(n\\):'"):
        parse_args(["checkpoint=x", "--cfg", "job", "prompt=def fib(n):"])
    with pytest.raises(HelpRequested, match="prompt_file"):
        parse_args(["--help"])
