"""Keep credentials out of everything the harness records: params, config files, logs, messages.

The harness records its whole resolved config (MLflow params, the run dir's ``config.yaml``,
Hydra's ``.hydra/*.yaml``, checkpoint configs) and prints URIs in messages, so a credential given
in ``tracking.uri`` would otherwise be stored in plain text in many places. Everything here
replaces the secret part with ``***`` and leaves the rest readable:

- URI userinfo: ``https://user:token@host`` -> ``https://user:***@host`` (the user name is kept,
  it says which account was used; a userinfo without ``:`` may be a bare token, so it all goes:
  ``https://ghp_abc@host`` -> ``https://***@host``).
- Secret-looking ``name=value`` / ``name: value`` pairs, in URI queries and in free text, where
  ``name`` ends in password, passwd, pwd, secret, token, auth, sig, signature, credential(s), or an
  API/access/private/... key (``access_token=``, ``X-Amz-Signature=``, ``client_secret=``, ...),
  case-insensitive. Tokenizer fields such as ``eos_token`` are not secrets and are kept.
- ``Authorization: Basic ...`` / ``Bearer ...`` header values.
- The literal values of the environment variables in ``SECRET_ENV_VARS`` and of secrets passed to
  ``register_secret`` (e.g. the password from ``tracking.uri``), wherever they appear: a password
  given through the environment can never be echoed back, even inside an unrelated message.

Limits: a password with a raw ``@`` or whitespace that is not percent-encoded cannot be told
apart from the host reliably; the whole userinfo up to the last ``@`` is redacted. Values shorter
than ``MIN_SECRET_LENGTH`` are not matched literally (they would mangle ordinary words).
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gpt5_ablate.files import write_atomic

REDACTED = "***"

# Environment variables whose values are secrets: their literal values are redacted from text.
SECRET_ENV_VARS = (
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_CLIENT_SECRET",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_CLIENT_SECRET",
    "DATABRICKS_TOKEN",
    "DATABRICKS_CLIENT_SECRET",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "PGPASSWORD",
)

# Shorter literal values are not searched for: "abc" would be redacted out of ordinary words.
MIN_SECRET_LENGTH = 4

# Special-token fields of tokenizer configs end in "token" but hold no secret.
_NOT_SECRET_NAMES = frozenset(
    f"{kind}_token"
    for kind in ("bos", "eos", "pad", "unk", "sep", "cls", "mask", "start", "end", "special")
)

# A name that holds a secret: long words may follow any prefix (``sslpassword``,
# ``access_token``, ``client_secret``); short ones only alone or after a separator (``pwd``,
# ``http_auth``, ``sig``), so that e.g. ``author`` or ``config`` stay ordinary. Every repetition
# below is bounded, and matches start only where a name or scheme can start, so that a long run
# of dots or letters costs linear time, not quadratic.
_SECRET_NAME = (
    r"[\w.-]{0,100}?(?:password|passwd|secret|token|signature|credentials?|apikey|api[_-]?key"
    r"|(?:access|private|account|client|signing|sas|master|secret|encryption)[_-]?key)"
    r"|(?:[\w.-]{0,100}[_.-])?(?:pwd|auth|sig)"
)
_SECRET_NAME_RE = re.compile(rf"(?:{_SECRET_NAME})", re.IGNORECASE)

_SCHEME = r"(?<![A-Za-z0-9+.-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,31}://)"
# ``scheme://userinfo@``: userinfo runs to the last ``@`` before the path, query or whitespace.
_USERINFO_RE = re.compile(rf"{_SCHEME}(?P<userinfo>[^\s/?#\"'<>]{{1,1024}})@")
# SQLAlchemy-style ``user:pa/ss@host`` (a raw ``/`` in the password) that the RFC rule misses.
_LENIENT_USERINFO_RE = re.compile(
    rf"{_SCHEME}(?P<user>[^\s:/?#@\"'<>]{{1,256}}):(?P<password>[^\s@\"'<>]{{1,1024}})@"
)
_PORT_THEN_PATH_RE = re.compile(r"\d+(?:[/?#].*)?", re.DOTALL)
_AUTHORIZATION_RE = re.compile(
    r"(?P<head>\bauthorization[\"']?\s*[:=]\s*[\"']?(?:(?:basic|bearer|token|digest)\s+)?)"
    r"(?P<value>[^\s\"',;]+)",
    re.IGNORECASE,
)
# ``name=value`` (queries, shell, libpq, JDBC) and ``name: value`` (YAML, JSON, messages). The
# value runs to whitespace, a quote or a query separator.
_PAIR_RE = re.compile(
    rf"(?<![\w.-])(?P<name>{_SECRET_NAME})"
    r"(?P<sep>[\"']?(?:[ \t]*=[ \t]*|:[ \t]+|:(?=[\"']))[\"']?)"
    r"(?P<value>[^\s\"'&;<>]+)",
    re.IGNORECASE,
)
# In a URI query a bare ``key=`` is an API key (e.g. Google's ``?key=AIza...``).
_QUERY_KEY_RE = re.compile(r"(?P<head>[?&;]key=)(?P<value>[^\s\"'&;#<>]+)", re.IGNORECASE)

_registered: set[str] = set()


def is_secret_name(name: str) -> bool:
    """Whether a config key or parameter name (its last dotted part) names a secret."""
    last = name.rsplit(".", 1)[-1].lower()
    return last not in _NOT_SECRET_NAMES and _SECRET_NAME_RE.fullmatch(last) is not None


def _redact_structure(text: str, found: list[str] | None = None) -> str:
    """The structural rules (userinfo, Authorization, pairs); ``found`` collects what was cut."""

    def keep(value: str) -> None:
        if found is not None and value != REDACTED:
            found.append(value)

    def userinfo(match: re.Match[str]) -> str:
        info = match["userinfo"]
        user, colon, password = info.partition(":")
        if colon:
            keep(password)
            return f"{match['scheme']}{user}:{REDACTED}@"
        keep(info)
        return f"{match['scheme']}{REDACTED}@"

    def lenient(match: re.Match[str]) -> str:
        if _PORT_THEN_PATH_RE.fullmatch(match["password"]):
            return match[0]  # host:port/path...@ - an ``@`` in the path, not a password
        keep(match["password"])
        return f"{match['scheme']}{match['user']}:{REDACTED}@"

    def pair(match: re.Match[str]) -> str:
        if match["name"].rsplit(".", 1)[-1].lower() in _NOT_SECRET_NAMES:
            return match[0]
        keep(match["value"])
        return f"{match['name']}{match['sep']}{REDACTED}"

    def value_after_head(match: re.Match[str]) -> str:
        keep(match["value"])
        return f"{match['head']}{REDACTED}"

    text = _USERINFO_RE.sub(userinfo, text)
    text = _LENIENT_USERINFO_RE.sub(lenient, text)
    text = _AUTHORIZATION_RE.sub(value_after_head, text)
    text = _PAIR_RE.sub(pair, text)
    return _QUERY_KEY_RE.sub(value_after_head, text)


def env_secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of ``SECRET_ENV_VARS`` that are set (and long enough to match safely)."""
    environ = os.environ if environ is None else environ
    values = (environ.get(name, "") for name in SECRET_ENV_VARS)
    return [value for value in values if len(value) >= MIN_SECRET_LENGTH]


def _literal_variants(value: str) -> set[str]:
    # As given, percent-encoded (as it appears inside a URI) and decoded (as a URI's userinfo
    # says it), so every spelling of the secret is found.
    variants = {
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value, safe=""),
        urllib.parse.unquote(value),
    }
    return {v for v in variants if len(v) >= MIN_SECRET_LENGTH}


def redact_literals(
    text: str, values: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> str:
    """Replace every occurrence of the given values, of the ``SECRET_ENV_VARS`` values set in
    ``environ`` (default ``os.environ``) and of registered secrets with ``***``."""
    literals: set[str] = set()
    for value in (*values, *env_secret_values(environ), *_registered):
        literals |= _literal_variants(value)
    for literal in sorted(literals, key=len, reverse=True):  # longest first: no partial leftovers
        text = text.replace(literal, REDACTED)
    return text


def redact_text(text: str) -> str:
    """``text`` (a log line, an error message, a YAML dump...) with every credential replaced:
    URI userinfo, secret query/``name=value``/``name: value`` pairs, Authorization header values,
    and the literal values of secret environment variables and registered secrets."""
    if not text:
        return text
    # Literals first: a structural rule could cut a secret in two and leave a fragment behind.
    return _redact_structure(redact_literals(text))


def redact_uri(uri: str) -> str:
    """``uri`` with its credentials replaced by ``***``; a URI without any is returned unchanged.

    ``https://user:token@host`` -> ``https://user:***@host``, ``https://tok@host`` ->
    ``https://***@host``, ``https://host/x?api_key=k&a=b`` -> ``https://host/x?api_key=***&a=b``.
    """
    return redact_text(uri)


def uri_without_userinfo(uri: str) -> str:
    """``uri`` with its ``user:password@`` part removed, for clients that cannot use it (e.g.
    ``urllib.request.urlopen``, which would take ``user:password@host`` for a host name)."""
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def contains_secret(text: str) -> bool:
    """Whether ``redact_text`` would change ``text``."""
    return redact_text(text) != text


def secrets_in(text: str) -> list[str]:
    """The secret values ``redact_text``'s structural rules would cut out of ``text``."""
    found: list[str] = []
    _redact_structure(text, found)
    return found


def register_secret(value: str) -> None:
    """Redact ``value`` (and its percent-encoded/decoded forms) wherever it appears from now on,
    e.g. inside an error message that quotes only a fragment of a URI."""
    if len(value) >= MIN_SECRET_LENGTH:
        _registered.add(value)


def register_secrets_in(text: str) -> None:
    """``register_secret`` every credential found in ``text`` (e.g. ``tracking.uri``)."""
    for value in secrets_in(text):
        register_secret(value)


def clear_registered_secrets() -> None:
    _registered.clear()


def redact_config(container: Any) -> Any:
    """A deep copy of a config container (dicts, lists, tuples; an OmegaConf config is converted
    with ``resolve=True``) with credentials redacted: every string through ``redact_text``, and
    every scalar under a secret-named key (``password``, ``db.api_key``...) replaced outright."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(container, DictConfig | ListConfig):
            container = OmegaConf.to_container(container, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return _redact_value(container, secret_key=False)


def _redact_value(value: Any, secret_key: bool) -> Any:
    if isinstance(value, Mapping):
        return {
            key: _redact_value(item, isinstance(key, str) and is_secret_name(key))
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        items = [_redact_value(item, secret_key) for item in value]
        return type(value)(items) if isinstance(value, tuple) else items
    if isinstance(value, str):
        return REDACTED if secret_key and value else redact_text(value)
    if isinstance(value, bytes):
        return REDACTED.encode() if secret_key and value else value
    # A numeric password parsed from YAML is still a password; flags and nulls say nothing.
    if secret_key and isinstance(value, int | float) and not isinstance(value, bool):
        return REDACTED
    return value


class RedactingFilter(logging.Filter):
    """A log filter that redacts each record's message, traceback and stack info in place.

    Attach it to every handler (handler filters also see records propagated from child loggers,
    logger filters do not): ``handler.addFilter(RedactingFilter())`` or ``install_log_redaction()``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: redact what is there, let logging report it
            message = str(record.msg)
        record.msg = redact_text(message)
        record.args = None  # the message is formatted already; a second format would fail
        if record.exc_info and not record.exc_text:
            # Formatters reuse a cached exc_text, so the redacted traceback is what gets written.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def install_log_redaction(*loggers: logging.Logger) -> RedactingFilter:
    """Add one shared ``RedactingFilter`` to every handler of ``loggers`` (default: the root
    logger, where Hydra puts its console and ``<job>.log`` handlers). Call it again after new
    handlers are added; handlers that already redact are skipped."""
    shared = RedactingFilter()
    for logger in loggers or (logging.getLogger(),):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(shared)
    return shared


def install_record_redaction() -> None:
    """Redact every log record as it is created, whatever logger or handler it goes to.

    Handler filters are lost whenever logging is reconfigured (Hydra's launcher calls
    ``logging.config.dictConfig`` before it logs each job's overrides); a record factory is not.
    Idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_redacting", False):
        return
    redacting = RedactingFilter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redacting.filter(record)
        return record

    factory._redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def install_warning_redaction() -> None:
    """Redact ``warnings.warn`` output (printed to stderr without passing through logging)."""
    original = warnings.formatwarning
    if getattr(original, "_redacting", False):
        return

    def formatwarning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        line: str | None = None,
    ) -> str:
        return redact_text(original(message, category, filename, lineno, line))

    formatwarning._redacting = True  # type: ignore[attr-defined]
    warnings.formatwarning = formatwarning


def redacted_argv(argv: Sequence[str]) -> list[str]:
    """Command-line arguments with credentials redacted (for logging the command line)."""
    return [redact_text(arg) for arg in argv]


def redact_file(path: os.PathLike[str] | str) -> bool:
    """Rewrite a text file (e.g. Hydra's ``.hydra/config.yaml``) with its credentials redacted;
    atomic (``gpt5_ablate.files.write_atomic``). Returns whether anything changed."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as file:
        text = file.read()
    redacted = redact_text(text)
    if redacted == text:
        return False
    write_atomic(path, redacted)
    return True
