"""Credential redaction: URIs, free text, config containers, files, log records and warnings."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gpt5_ablate.secrets import (
    REDACTED,
    SECRET_ENV_VARS,
    RedactingFilter,
    clear_registered_secrets,
    contains_secret,
    env_secret_values,
    install_log_redaction,
    install_record_redaction,
    install_warning_redaction,
    is_secret_name,
    redact_config,
    redact_file,
    redact_literals,
    redact_text,
    redact_uri,
    redacted_argv,
    register_secret,
    register_secrets_in,
    secrets_in,
    uri_without_userinfo,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No secret env var from the machine running the tests, no secret left registered."""
    for name in SECRET_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    clear_registered_secrets()
    yield
    clear_registered_secrets()


# --- URIs ----------------------------------------------------------------------------------------

URI_CASES = [
    # userinfo: the user name stays, the password goes
    ("https://user:token@host", "https://user:***@host"),
    ("https://user:token@host:8443/path?x=1", "https://user:***@host:8443/path?x=1"),
    ("http://alice:s3cr3t!@127.0.0.1:5000", "http://alice:***@127.0.0.1:5000"),
    ("postgresql://mlflow:PASSWORD@db:5432/x", "postgresql://mlflow:***@db:5432/x"),
    ("postgresql+psycopg2://mlflow:PASSWORD@db/x", "postgresql+psycopg2://mlflow:***@db/x"),
    ("mysql://root:pw1234@localhost/mlflow", "mysql://root:***@localhost/mlflow"),
    ("HTTPS://USER:TOKEN@HOST", "HTTPS://USER:***@HOST"),
    # percent-encoded, raw '@' and raw '/' (SQLAlchemy accepts these) in the password
    ("http://u:p%40ss@127.0.0.1:5000", "http://u:***@127.0.0.1:5000"),
    ("http://u:p@ss@127.0.0.1:5000/a", "http://u:***@127.0.0.1:5000/a"),
    ("postgresql://mlflow:pa/ss@db:5432/x", "postgresql://mlflow:***@db:5432/x"),
    ("http://user:@host", "http://user:***@host"),
    # a userinfo without ':' may be a bare token: all of it goes
    ("https://ghp_abc123@github.com/x.git", "https://***@github.com/x.git"),
    ("https://user@host", "https://***@host"),
    # secret query parameters, case-insensitive, others kept
    ("https://host/x?api_key=k&a=b", "https://host/x?api_key=***&a=b"),
    ("https://host/x?a=b&token=abc", "https://host/x?a=b&token=***"),
    ("https://host/x?Access_Token=abc", "https://host/x?Access_Token=***"),
    ("https://host/x?PASSWORD=abc&Secret=def", "https://host/x?PASSWORD=***&Secret=***"),
    (
        "https://host/?client_secret=c&refresh_token=r",
        "https://host/?client_secret=***&refresh_token=***",
    ),
    (
        "s3://b/o?X-Amz-Signature=abc&X-Amz-Credential=AKIA%2F&X-Amz-Security-Token=t",
        "s3://b/o?X-Amz-Signature=***&X-Amz-Credential=***&X-Amz-Security-Token=***",
    ),
    (
        "https://acct.blob.core.windows.net/c?sv=2022&sig=abc%3D",
        "https://acct.blob.core.windows.net/c?sv=2022&sig=***",
    ),
    ("https://maps.example.com/api?key=AIzaXYZ&q=1", "https://maps.example.com/api?key=***&q=1"),
    ("wss://user:pw@x:1/y?token=q", "wss://user:***@x:1/y?token=***"),
    ("http://u:p@h/?apikey=1234", "http://u:***@h/?apikey=***"),
]


@pytest.mark.parametrize(("uri", "expected"), URI_CASES)
def test_redact_uri(uri: str, expected: str) -> None:
    assert redact_uri(uri) == expected
    assert redact_uri(expected) == expected  # idempotent


UNCHANGED = [
    "sqlite:///mlflow.db",
    "sqlite:////abs/path/mlflow.db",
    "file:./x",
    "file:///tmp/mlruns",
    "http://127.0.0.1:5000",
    "http://localhost:5000/#/experiments/1/runs/abc",
    "https://mlflow.internal:5000/api/2.0/mlflow/runs/search?max_results=10&order_by=x",
    "http://127.0.0.1:5000/users/x@y.com",  # '@' in the path, after the port
    "mlflow-artifacts:/1/abc/artifacts",
    "s3://my-bucket/mlflow-artifacts",
    "databricks",
    "a=b",
    "a: b",
    "trainer.max_tokens=100",
    "tokenizer.eos_token=<|endoftext|>",
    "eos_token: <|endoftext|>",
    "tokenizer.vocab_size=512",
    "optimizer.adamw_betas=[0.9, 0.95]",
    "tracking.experiment=gpt5_ablate",
    "author=Jane",
    "config=x",
    "monkey=3",
    "sort_key=abc",
    "keyboard: qwerty",
    "mailto:a@b.com",
    "git@github.com:x/y.git",
    "alice@example.com",
    "Basic configuration works",
    "Authorization is required",
    "the token budget is 1000 tokens",
    "max_tokens: 2000000000",
    "",
    "step 10: loss 4.32, val/loss 4.50, tokens/s 10240",
    "error: tracking.uri='http://127.0.0.1:5000' is unreachable (Connection refused)",
]


@pytest.mark.parametrize("text", UNCHANGED)
def test_no_false_positives(text: str) -> None:
    assert redact_text(text) == text
    assert not contains_secret(text)


# --- free text -----------------------------------------------------------------------------------

TEXT_CASES = [
    (
        "error: tracking.uri='http://alice:s3cr3t@127.0.0.1:5000' is unreachable",
        "error: tracking.uri='http://alice:***@127.0.0.1:5000' is unreachable",
    ),
    (
        "MLflow tracking at https://bob:tok@mlflow.internal failed (ConnectionError: ...)",
        "MLflow tracking at https://bob:***@mlflow.internal failed (ConnectionError: ...)",
    ),
    (
        "host=db user=mlflow password=secret123 dbname=x",
        "host=db user=mlflow password=*** dbname=x",
    ),
    ("jdbc:sqlserver://h;user=x;password=y;", "jdbc:sqlserver://h;user=x;password=***;"),
    ("password: hunter22", "password: ***"),
    ("  db_password: hunter22\n  user: x\n", "  db_password: ***\n  user: x\n"),
    ('{"password": "hunter22", "user": "x"}', '{"password": "***", "user": "x"}'),
    ("{'api_key': 'abc', 'n': 1}", "{'api_key': '***', 'n': 1}"),
    (
        "MLFLOW_TRACKING_PASSWORD=abcdef python -m gpt5_ablate",
        "MLFLOW_TRACKING_PASSWORD=*** python -m gpt5_ablate",
    ),
    ("export AWS_SECRET_ACCESS_KEY = wJalr", "export AWS_SECRET_ACCESS_KEY = ***"),
    ("secret_key=abc", "secret_key=***"),
    ("--password=abc --lr=3", "--password=*** --lr=3"),
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
    ("authorization=Bearer eyJhbGciOi.x.y", "authorization=Bearer ***"),
    ("headers={'Authorization': 'Bearer abc.def'}", "headers={'Authorization': 'Bearer ***'}"),
    (
        "- tracking.uri=http://u:pw12@h:1\n- attention=gqa\n",
        "- tracking.uri=http://u:***@h:1\n- attention=gqa\n",
    ),
    (
        "two: https://a:one1@h1 and https://b:two2@h2/x?token=t",
        "two: https://a:***@h1 and https://b:***@h2/x?token=***",
    ),
]


@pytest.mark.parametrize(("text", "expected"), TEXT_CASES)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert redact_text(expected) == expected


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("tracking.password", True),
        ("DB_PASSWORD", True),
        ("sslpassword", True),
        ("pwd", True),
        ("access_token", True),
        ("client_secret", True),
        ("api_key", True),
        ("apiKey", True),
        ("X-Amz-Signature", True),
        ("credentials", True),
        ("http_auth", True),
        ("sig", True),
        ("eos_token", False),
        ("tokenizer.bos_token", False),
        ("pad_token", False),
        ("max_tokens", False),
        ("tokenizer", False),
        ("author", False),
        ("sort_key", False),
        ("uri", False),
        ("name", False),
    ],
)
def test_is_secret_name(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://alice:pw@127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("https://u:p@ss@host/x?y=1", "https://host/x?y=1"),
        ("https://tok@host", "https://host"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ],
)
def test_uri_without_userinfo(uri: str, expected: str) -> None:
    assert uri_without_userinfo(uri) == expected


def test_secrets_in_and_registration() -> None:
    uri = "http://alice:pa%2Fss-word@127.0.0.1:5000/?token=tok-123"
    assert secrets_in(uri) == ["pa%2Fss-word", "tok-123"]
    # A fragment of the URI in someone else's message has no structure to recognise...
    message = "InvalidURL: nonnumeric port: 'pa/ss-word@127.0.0.1:5000'"
    assert redact_text(message) == message
    # ...until the secrets of tracking.uri are registered: then every spelling of them goes.
    register_secrets_in(uri)
    assert redact_text(message) == f"InvalidURL: nonnumeric port: '{REDACTED}@127.0.0.1:5000'"
    assert "tok-123" not in redact_text("tok-123 in a log line")


def test_register_secret_ignores_short_values() -> None:
    register_secret("ab")
    assert redact_text("about a cab") == "about a cab"


# --- environment variables -----------------------------------------------------------------------


def test_env_secret_values_are_redacted_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "MLFLOW_TRACKING_PASSWORD" in SECRET_ENV_VARS
    assert "MLFLOW_TRACKING_TOKEN" in SECRET_ENV_VARS
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "correct horse@battery")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tkn-9876")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")  # not a secret: kept
    assert set(env_secret_values()) == {"correct horse@battery", "tkn-9876"}
    text = (
        "login alice / correct horse@battery failed; retry with correct%20horse%40battery, "
        "header Bearer tkn-9876"
    )
    assert (
        redact_text(text)
        == f"login alice / {REDACTED} failed; retry with {REDACTED}, header Bearer {REDACTED}"
    )


def test_env_secret_with_separator_leaves_no_fragment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "abc&def;ghi")
    assert redact_text("password=abc&def;ghi next") == "password=*** next"


def test_short_env_values_are_not_matched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "ab")
    assert redact_text("about a cab") == "about a cab"


def test_redact_literals_with_explicit_environ() -> None:
    environ = {"HF_TOKEN": "hf_abcdef", "PATH": "/usr/bin"}
    assert (
        redact_literals("got hf_abcdef from /usr/bin", environ=environ) == "got *** from /usr/bin"
    )
    assert redact_literals("x-value-1 y", values=["x-value-1"], environ={}) == "*** y"


# --- config containers ---------------------------------------------------------------------------


def test_redact_config_deep_walk_returns_a_copy() -> None:
    config = {
        "tracking": {"uri": "http://alice:s3cr3t@127.0.0.1:5000", "experiment": "exp"},
        "db": {"password": 12345678, "enabled": True, "token": None, "api_key": ""},
        "tokenizer": {"eos_token": "<|endoftext|>", "vocab_size": 512},
        "list": [{"secret": "abc"}, "https://u:p4ss@h", 3, None],
        "tuple": ("x", "https://u:p4ss@h"),
        7: "an int key",
        "overrides": ["tracking.uri=http://a:b@h", "attention=gqa"],
    }
    redacted = redact_config(config)
    assert redacted == {
        "tracking": {"uri": "http://alice:***@127.0.0.1:5000", "experiment": "exp"},
        "db": {"password": "***", "enabled": True, "token": None, "api_key": ""},
        "tokenizer": {"eos_token": "<|endoftext|>", "vocab_size": 512},
        "list": [{"secret": "***"}, "https://u:***@h", 3, None],
        "tuple": ("x", "https://u:***@h"),
        7: "an int key",
        "overrides": ["tracking.uri=http://a:***@h", "attention=gqa"],
    }
    assert config["tracking"]["uri"] == "http://alice:s3cr3t@127.0.0.1:5000"  # input untouched


def test_redact_config_flattened_params() -> None:
    params = {"tracking.uri": "https://u:tok@h", "tracking.password": "pw-123", "seed": 0}
    assert redact_config(params) == {
        "tracking.uri": "https://u:***@h",
        "tracking.password": "***",
        "seed": 0,
    }


def test_redact_config_accepts_omegaconf() -> None:
    cfg = OmegaConf.create({"tracking": {"uri": "http://u:pw@h", "alias": "${tracking.uri}"}})
    assert redact_config(cfg) == {"tracking": {"uri": "http://u:***@h", "alias": "http://u:***@h"}}
    plain = {"a": 1, "b": ["x"], "c": {"d": "sqlite:///mlflow.db"}}
    assert redact_config(plain) == plain


def test_redact_file(tmp_path: Path) -> None:
    path = tmp_path / "overrides.yaml"
    path.write_text("- tracking.uri=http://u:pw12@h:5000\n- seed=1\n")
    assert redact_file(path) is True
    assert path.read_text() == "- tracking.uri=http://u:***@h:5000\n- seed=1\n"
    assert redact_file(path) is False
    assert [p.name for p in tmp_path.iterdir()] == ["overrides.yaml"]  # no temp file left


def test_redacted_argv() -> None:
    argv = ["python", "-m", "gpt5_ablate", "tracking.uri=http://u:pw12@h", "seed=1"]
    assert redacted_argv(argv) == [
        "python",
        "-m",
        "gpt5_ablate",
        "tracking.uri=http://u:***@h",
        "seed=1",
    ]


# --- logging and warnings ------------------------------------------------------------------------


@pytest.fixture
def captured_logger() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("gpt5_ablate.test_redact")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream, handler
    logger.removeHandler(handler)


def test_redacting_filter_formats_args(captured_logger) -> None:
    logger, stream, handler = captured_logger
    handler.addFilter(RedactingFilter())
    logger.info("tracking at %s (%d tries)", "http://u:pw12@h:5000", 3)
    logger.info("plain %s", "sqlite:///mlflow.db")
    logger.info({"password": "hunter22"})  # a non-string msg
    logger.info("bad format %d", "x")  # logging's own error is not ours to raise
    lines = stream.getvalue().splitlines()
    assert lines[0] == "INFO tracking at http://u:***@h:5000 (3 tries)"
    assert lines[1] == "INFO plain sqlite:///mlflow.db"
    assert lines[2] == "INFO {'password': '***'}"
    assert "hunter22" not in stream.getvalue() and "pw12" not in stream.getvalue()


def test_redacting_filter_covers_tracebacks(captured_logger) -> None:
    logger, stream, handler = captured_logger
    handler.addFilter(RedactingFilter())
    try:
        raise ConnectionError("cannot reach https://bob:tok-5678@mlflow.internal")
    except ConnectionError:
        logger.exception("failed")
    logger.info("stack", stack_info=True, extra={"x": 1})
    out = stream.getvalue()
    assert "ConnectionError: cannot reach https://bob:***@mlflow.internal" in out
    assert "tok-5678" not in out


def test_install_log_redaction_is_idempotent(captured_logger) -> None:
    logger, stream, handler = captured_logger
    install_log_redaction(logger)
    install_log_redaction(logger)
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    logger.warning("uri=%s", "https://u:pw12@h")
    assert stream.getvalue() == "WARNING uri=https://u:***@h\n"


def test_install_record_redaction_survives_reconfiguration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logging, "_logRecordFactory", logging.getLogRecordFactory())
    install_record_redaction()
    install_record_redaction()  # a second call does not wrap twice
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # added afterwards, no filter of its own
    logger = logging.getLogger("gpt5_ablate.test_record_factory")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("\t#%d : attention=gqa tracking.uri=%s", 0, "http://u:pw12@h:5000")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "\t#0 : attention=gqa tracking.uri=http://u:***@h:5000\n"


def test_install_warning_redaction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored afterwards
    install_warning_redaction()
    install_warning_redaction()  # a second call does not wrap twice
    text = warnings.formatwarning("tracking at http://u:pw12@h failed", UserWarning, "f.py", 3)
    assert text == "f.py:3: UserWarning: tracking at http://u:***@h failed\n"


def test_warning_redaction_end_to_end() -> None:
    """Python prints warnings through ``formatwarning`` when it was replaced (pytest captures
    warnings itself, hence a subprocess)."""
    code = (
        "import warnings\n"
        "from gpt5_ablate.secrets import install_warning_redaction\n"
        "install_warning_redaction()\n"
        "warnings.warn('MLflow tracking at http://u:pw12@h failed')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "MLflow tracking at http://u:***@h failed" in result.stderr
    assert "pw12" not in result.stderr
