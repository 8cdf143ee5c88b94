"""One argument parser for the tools beside training (``generate``, ``report``).

Training composes its config with Hydra; these tools take the same ``key=value`` spelling, typed by
a dataclass, with two differences that matter for them:

- a string value is taken exactly as the shell passed it: ``prompt="def fib(n):"`` arrives as
  ``prompt=def fib(n):`` and stays ``def fib(n):`` (Hydra and OmegaConf would parse the colon into
  a dict and strip trailing spaces);
- dotted keys are accepted with ``.`` or ``_`` (``tracking.uri`` = ``tracking_uri``).

``--help`` prints the keys with their defaults and help text; ``--cfg job`` (anywhere on the
command line, as in training) prints the parsed config as YAML and exits.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from gpt5_ablate.errors import ConfigError

T = TypeVar("T")
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}
NULL = {"null", "none", "~"}


class HelpRequested(Exception):
    """``--help`` or ``--cfg job`` was asked for: print ``text`` and exit 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _field_types(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def _convert(key: str, raw: str, annotation: Any) -> Any:
    """``raw`` as ``annotation`` (str, int, float, bool, Path, Literal, or Optional of those)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if raw.strip().lower() in NULL:
            return None
        return _convert(key, raw, options[0])
    if origin is typing.Literal:
        choices = [str(c) for c in typing.get_args(annotation)]
        if raw not in choices:
            raise ConfigError(f"{key}={raw!r} is invalid. Valid choices: {', '.join(choices)}.")
        return raw
    if annotation is str:
        return raw  # exactly as given: colons, quotes, trailing spaces, newlines
    if annotation is Path:
        return Path(raw).expanduser()
    if annotation is bool:
        if raw.strip().lower() not in TRUE | FALSE:
            raise ConfigError(f"{key}={raw!r} is not a boolean: use true or false.")
        return raw.strip().lower() in TRUE
    if annotation in (int, float):
        try:
            return annotation(raw.strip())
        except ValueError:
            raise ConfigError(
                f"{key}={raw!r} is not {'an integer' if annotation is int else 'a number'}."
            ) from None
    raise TypeError(f"unsupported field type {annotation!r} for {key}")


def help_text(schema: type, prog: str, summary: str) -> str:
    lines = [f"usage: {prog} key=value ... [--cfg job]", "", summary.strip(), "", "keys:"]
    for f in dataclasses.fields(schema):
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
        )
        doc = f.metadata.get("help", "")
        lines.append(f"  {f.name.replace('__', '.')}={default!s}" + (f"   {doc}" if doc else ""))
    return "\n".join(lines)


def as_yaml(cfg: Any) -> str:
    from omegaconf import OmegaConf

    plain = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    return OmegaConf.to_yaml(plain)


def parse_key_values(schema: type[T], argv: Sequence[str], prog: str, summary: str = "") -> T:
    """Parse ``argv`` into ``schema``; raises ``ConfigError`` (bad key or value) or
    ``HelpRequested`` (``--help``/``--cfg job``)."""
    args = list(argv)
    if any(a in ("-h", "--help") for a in args):
        raise HelpRequested(help_text(schema, prog, summary))
    show_cfg = False
    if "--cfg" in args:
        at = args.index("--cfg")
        what = args[at + 1] if at + 1 < len(args) else "job"
        if what not in ("job", "all"):
            raise ConfigError(f"--cfg {what!r} is invalid. Valid choices: job, all.")
        del args[at : at + 2]
        show_cfg = True
    types_ = _field_types(schema)
    # Field names with a dot spelled as an underscore: tracking_uri answers tracking.uri too.
    keys = {name: name for name in types_} | {name.replace("_", "."): name for name in types_}
    values: dict[str, Any] = {}
    for item in args:
        key, sep, raw = item.partition("=")
        key = key.lstrip("+")
        if not sep or not key:
            raise ConfigError(
                f"Argument {item!r} is not key=value. Valid keys: {', '.join(types_)}."
            )
        if key not in keys:
            raise ConfigError(f"Unknown key {key!r}. Valid keys: {', '.join(types_)}.")
        name = keys[key]
        values[name] = _convert(key, raw, types_[name])
    cfg = schema(**values)
    if show_cfg:
        raise HelpRequested(as_yaml(cfg))
    return cfg


def run_tool(main: typing.Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Call a tool's ``main`` and turn the usual outcomes into exit statuses: 0, or 2 with a
    one-line ``error:`` for bad input."""
    from gpt5_ablate.errors import InputError

    try:
        return main(list(sys.argv[1:] if argv is None else argv))
    except HelpRequested as shown:
        print(shown.text)
        return 0
    except (ConfigError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
