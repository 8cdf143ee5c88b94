"""Fail fast, with a clear message, when a Hugging Face download cannot work.

``datasets`` and ``transformers`` retry for a long time when the network is down; on an offline
machine that looks like a hang. We check the documented offline switches first and then open one
TCP connection to the hub host with a short timeout, so the user gets an answer in seconds.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

from gpt5_ablate.errors import InputError

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
TRUE_VALUES = {"1", "true", "yes", "on"}
DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_host() -> tuple[str, int]:
    """The hub host and port, honouring a mirror set with ``HF_ENDPOINT``."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    port = url.port or (80 if url.scheme == "http" else 443)
    return url.hostname or "huggingface.co", port


def offline_reason() -> str | None:
    """Why Hugging Face downloads are disabled by the environment, or None when they are not."""
    for variable in OFFLINE_VARIABLES:
        value = os.environ.get(variable, "")
        if value.strip().lower() in TRUE_VALUES:
            return f"{variable}={value} is set"
    return None


def probe_hub(timeout: float = 3.0) -> str | None:
    """Try one TCP connection to the hub; return why it failed, or None when it succeeded.

    The connection runs in a daemon thread joined with a deadline because DNS resolution ignores
    socket timeouts and can block for much longer than ``timeout`` on a broken resolver.
    """
    host, port = hub_host()
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as exc:
            outcome.append(f"{host}:{port} is unreachable ({exc.__class__.__name__}: {exc})")

    thread = threading.Thread(target=connect, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if not outcome:
        return f"{host}:{port} did not answer within {timeout:g} s"
    return outcome[0]


def hub_unavailable_reason(timeout: float = 3.0) -> str | None:
    """None when the hub looks reachable; otherwise a short reason for the error message."""
    return offline_reason() or probe_hub(timeout)


def require_hub(what: str, timeout: float = 3.0) -> None:
    """Raise InputError right away when ``what`` (e.g. ``data=tinystories``) cannot download."""
    reason = hub_unavailable_reason(timeout)
    if reason is None:
        return
    host, _ = hub_host()
    raise InputError(
        f"{what} needs internet access to {host} to download its files, but {reason}. "
        "Offline, use data=stdlib (the Python standard library, always available) or "
        "data=text_files with data.patterns pointing at your own text files; or run once with "
        "internet access so the prepared data lands in cache_dir and is reused afterwards."
    )
