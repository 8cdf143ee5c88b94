"""Hydra's composition errors, said the harness's way: a mistyped key gets "did you mean ...?".

Hydra prints a composition error itself and exits 1, suggesting ``+key=value`` for an unknown key,
which fails again on the typed config. So the CLI has Hydra raise composition errors instead
(``HYDRA_FULL_ERROR`` until the job starts) and reports them here: an unknown key as one paragraph
naming the nearest valid keys of the composed config (exit 2), anything else as Hydra would.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Sequence

from hydra.errors import CompactHydraException, ConfigCompositionException, HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gpt5_ablate.config import flatten

FULL_ERROR_ENV = "HYDRA_FULL_ERROR"
SET_BY_US_ENV = "GPT5_ABLATE_RAISE_COMPOSITION_ERRORS"
UNKNOWN_KEY = re.compile(r"Could not override '([^']+)'")


def raise_composition_errors() -> None:
    """Before Hydra runs: make it raise a composition error instead of printing it."""
    if FULL_ERROR_ENV not in os.environ:
        os.environ[FULL_ERROR_ENV] = "1"
        os.environ[SET_BY_US_ENV] = "1"


def composition_done() -> None:
    """The job starts: Hydra reports errors its usual way again (unless the user asked)."""
    if os.environ.pop(SET_BY_US_ENV, None):
        os.environ.pop(FULL_ERROR_ENV, None)


def report_composition_error(error: HydraException, argv: Sequence[str]) -> int:
    """Print ``error`` for the user; returns the exit status (2 for an unknown key, else 1)."""
    match = UNKNOWN_KEY.search(str(error))
    if isinstance(error, ConfigCompositionException) and match and not match[1].startswith("hydra"):
        print(f"error: {unknown_key_message(match[1], argv)}", file=sys.stderr)
        return 2
    print(str(error), file=sys.stderr)
    cause = error.__cause__
    if isinstance(error, CompactHydraException) and isinstance(cause, OmegaConfBaseException):
        print(str(cause), file=sys.stderr)
    return 1


def unknown_key_message(key: str, argv: Sequence[str]) -> str:
    known = sorted(known_keys(argv))
    nearest = near_misses(key, known)
    listing = "python -m gpt5_ablate --cfg job lists every setting with its value"
    if nearest:
        return f"{key} is not a setting: did you mean {' or '.join(nearest)}? ({listing}.)"
    parent = key.rpartition(".")[0]
    siblings = [
        k.removeprefix(f"{parent}.") for k in known if parent and k.startswith(f"{parent}.")
    ]
    shown = f" Settings under {parent}: {', '.join(siblings)}." if siblings else ""
    return f"{key} is not a setting.{shown} ({listing}.)"


def near_misses(key: str, known: list[str]) -> list[str]:
    """The valid key(s) closest to ``key``: by the whole dotted name, else by the last part
    (``max_step`` finds ``trainer.max_steps``)."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    if close:
        return close
    by_leaf: dict[str, list[str]] = {}
    for name in known:
        by_leaf.setdefault(name.rpartition(".")[2], []).append(name)
    leaves = difflib.get_close_matches(key.rpartition(".")[2], list(by_leaf), n=1, cutoff=0.8)
    return [name for leaf in leaves for name in by_leaf[leaf]][:2]


def known_keys(argv: Sequence[str]) -> set[str]:
    """The dotted keys of the config the command composes: its group choices are applied (they
    decide which keys exist), its key overrides are not (one of them is the unknown one)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gpt5_ablate.cli import CONFIG_DIR

    groups = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if value and "." not in key and not key.startswith(("-", "hydra", "~")):
            groups.append(f"{key}={value.split(',')[0]}")  # a sweep's first option will do
    GlobalHydra.instance().clear()
    for overrides in (groups, []):
        try:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                cfg = compose("config", overrides=overrides)
            break
        except (HydraException, OmegaConfBaseException):
            GlobalHydra.instance().clear()
    else:
        return set()
    return {k for k in flatten(OmegaConf.to_container(cfg, resolve=False)) if k != "hydra"}
