"""A shared tracking server with MLflow's built-in authentication, as docs/scaling.md sets it up.

A real ``mlflow server --app-name basic-auth`` runs on 127.0.0.1 with its own SQLite stores; its
admin password comes from an auth config file (``MLFLOW_AUTH_CONFIG_PATH``) and is rotated at
once, as the docs say. Needs ``mlflow[auth]`` (Flask-WTF): the test is skipped without it.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mlflow_server import ServerProcess
from tests.train_helpers import TINY_OVERRIDES, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN = "admin"
USER = "alice"
CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def _password(prefix: str) -> str:
    # Random, so that finding it anywhere cannot be a coincidence; >= 12 characters (MLflow's
    # password policy); no characters that need percent-encoding in a URI.
    return f"{prefix}-{secrets.token_hex(10)}"


class AuthServer(ServerProcess):
    """``mlflow server --app-name basic-auth`` in its own process group, with its own stores."""

    def __init__(self, root: Path, admin_password: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.admin_password = admin_password
        self.auth_config = root / "basic_auth.ini"
        self.auth_config.write_text(
            "[mlflow]\n"
            # EDIT: every user may log runs into experiments others created, none may delete them.
            "default_permission = EDIT\n"
            f"database_uri = sqlite:///{root}/basic_auth.db\n"
            f"admin_username = {ADMIN}\n"
            f"admin_password = {admin_password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        self.auth_config.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV}
        env.update(
            MLFLOW_AUTH_CONFIG_PATH=str(self.auth_config),
            # The basic-auth app refuses to start without a static key (CSRF protection).
            MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(32),
        )
        super().__init__(root, extra_args=("--app-name", "basic-auth"), env=env)

    def request(
        self,
        method: str,
        path: str,
        auth: tuple[str, str] | None,
        body: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body or text); never raises for an HTTP error status."""
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.uri + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        except (urllib.error.URLError, OSError):
            return 0, None
        try:
            return status, json.loads(raw or b"null")
        except ValueError:
            return status, raw.decode(errors="replace")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    pytest.importorskip("flask_wtf", reason="the basic-auth app needs mlflow[auth] (Flask-WTF)")
    server = AuthServer(tmp_path_factory.mktemp("auth_server"), _password("bootstrap")).wait()
    try:
        # First thing after the first start: replace the bootstrap admin password (it sits in
        # a file), as docs/scaling.md says, then create one user per person.
        new_admin_password = _password("admin")
        status, body = server.request(
            "PATCH",
            "/api/2.0/mlflow/users/update-password",
            auth=(ADMIN, server.admin_password),
            body={
                "username": ADMIN,
                "password": new_admin_password,
                "current_password": server.admin_password,
            },
        )
        assert status == 200, body
        server.bootstrap_password = server.admin_password  # type: ignore[attr-defined]
        server.admin_password = new_admin_password
        server.user_password = _password("user")  # type: ignore[attr-defined]
        status, body = server.request(
            "POST",
            "/api/2.0/mlflow/users/create",
            auth=(ADMIN, server.admin_password),
            body={"username": USER, "password": server.user_password},  # type: ignore[attr-defined]
        )
        assert status == 200 and body["user"]["username"] == USER, body
        yield server
    finally:
        server.stop()


@pytest.fixture
def no_credentials_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CREDENTIAL_ENV:
        monkeypatch.delenv(name, raising=False)


def test_server_requires_credentials(
    auth_server: AuthServer, no_credentials_in_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    search = "/api/2.0/mlflow/experiments/search"
    body = {"max_results": 10}
    password = auth_server.user_password  # type: ignore[attr-defined]
    # The health check stays open (load balancers, the harness's pre-flight check)...
    assert auth_server.request("GET", "/health", auth=None)[0] == 200
    # ...everything else needs valid credentials.
    assert auth_server.request("POST", search, auth=None, body=body)[0] == 401
    assert (
        auth_server.request("POST", search, auth=(USER, "wrong-password-123"), body=body)[0] == 401
    )
    assert auth_server.request("POST", search, auth=(USER, password), body=body)[0] == 200
    # The bootstrap admin password from the config file no longer works once rotated.
    bootstrap = auth_server.bootstrap_password  # type: ignore[attr-defined]
    assert auth_server.request("POST", search, auth=(ADMIN, bootstrap), body=body)[0] == 401
    assert (
        auth_server.request("POST", search, auth=(ADMIN, auth_server.admin_password), body=body)[0]
        == 200
    )
    # Users are not admins: they cannot create users.
    create = "/api/2.0/mlflow/users/create"
    user_body = {"username": "mallory", "password": _password("mallory")}
    assert auth_server.request("POST", create, auth=(USER, password), body=user_body)[0] == 403

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with pytest.raises(MlflowException, match="401"):
        MlflowClient(tracking_uri=auth_server.uri).create_experiment("anonymous")

    # Credentials through the environment, as the docs recommend.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    client = MlflowClient(tracking_uri=auth_server.uri)
    experiment_id = client.create_experiment("auth_client_env")
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "lr", "0.02")
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).data.params == {"lr": "0.02"}

    # Credentials inside the URI work too (requests reads them from the URL).
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    in_uri = auth_server.uri.replace("http://", f"http://{USER}:{password}@")
    client = MlflowClient(tracking_uri=in_uri)
    run = client.create_run(experiment_id)
    assert client.get_run(run.info.run_id).info.experiment_id == experiment_id


# --- training through the real CLI ----------------------------------------------------------------


def _needles(password: str) -> list[bytes]:
    """Every spelling of the password that could end up in a file or on the console."""
    basic = base64.b64encode(f"{USER}:{password}".encode())
    return [
        password.encode(),
        urllib.parse.quote(password, safe="").encode(),
        basic,  # an Authorization header, had one been logged
    ]


def _files_holding(root: Path, needles: list[bytes]) -> list[str]:
    """Every file under ``root`` (recursively, hidden dirs such as .hydra/ included) whose bytes
    contain one of ``needles``."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {n!r}" for n in needles if n in data]
    return found


def _store_texts(
    auth_server: AuthServer, experiment: str, dst: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], int]:
    """Everything the store says about the experiment's runs (params, tags, metric keys, run
    names), read with an authenticated client, plus the runs' artifacts downloaded to ``dst``;
    returns (texts, number of FINISHED runs)."""
    from mlflow.tracking import MlflowClient

    with monkeypatch.context() as env:
        env.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
        env.setenv("MLFLOW_TRACKING_PASSWORD", auth_server.admin_password)
        client = MlflowClient(tracking_uri=auth_server.uri)
        found = client.get_experiment_by_name(experiment)
        assert found is not None, f"no experiment {experiment!r} on the server"
        texts = [found.name, found.artifact_location, json.dumps(found.tags)]
        runs = client.search_runs([found.experiment_id])
        finished = 0
        for run in runs:
            finished += run.info.status == "FINISHED"
            texts += [run.info.run_name or "", run.info.artifact_uri or ""]
            texts += [f"{k}={v}" for k, v in run.data.params.items()]
            texts += [f"{k}={v}" for k, v in run.data.tags.items()]
            texts += list(run.data.metrics)
            assert "train/loss" in run.data.metrics, run.data.metrics
            client.download_artifacts(run.info.run_id, "", str(dst / run.info.run_id))
        return texts, finished


def test_training_with_credentials_records_no_password(
    auth_server: AuthServer,
    no_credentials_in_env: None,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two short runs through the real CLI: credentials in the environment, then inside
    ``tracking.uri``. Both must log to the server, and the password must appear nowhere the
    harness records anything: the store (params, tags, metrics, artifacts, its files on disk),
    the run dirs (config.yaml, .hydra/, logs, checkpoints) or the console."""
    password = auth_server.user_password  # type: ignore[attr-defined]
    needles = _needles(password)
    cache_dir = tmp_path_factory.mktemp("auth_cache")
    common = [
        *TINY_OVERRIDES,
        "trainer.max_steps=4",
        "trainer.eval_every=4",
        "trainer.eval_tokens=1024",
        "trainer.log_every=2",
        "trainer.checkpoint_every=4",
        "trainer.sample_tokens=4",
        f"cache_dir={cache_dir}",
    ]
    with_uri = auth_server.uri.replace("http://", f"http://{USER}:{password}@")
    cases = {
        "env": (
            [f"tracking.uri={auth_server.uri}"],
            {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": password},
        ),
        "uri": ([f"tracking.uri={with_uri}"], {}),
    }
    for name, (overrides, env) in cases.items():
        workdir = tmp_path / name
        workdir.mkdir()
        result = run_cli(
            [*common, *overrides, f"tracking.experiment=auth_{name}"], workdir, env=env
        )
        console = (result.stdout + result.stderr).encode()
        assert result.returncode == 0, result.stderr[-3000:].replace(password, "<PASSWORD>")
        assert not [n for n in needles if n in console], f"{name}: the password is on the console"
        assert list(workdir.glob("outputs/**/.hydra/config.yaml")), f"{name}: no run dir"
        assert not _files_holding(workdir, needles), f"{name}: the password is in the run dir"

        texts, finished = _store_texts(
            auth_server, f"auth_{name}", tmp_path / f"artifacts_{name}", monkeypatch
        )
        assert finished == 1, f"{name}: {finished} FINISHED runs"
        assert not [t for t in texts if any(n.decode() in t for n in needles)], name
        assert not _files_holding(tmp_path / f"artifacts_{name}", needles), name
    # The server's own files: tracking database, proxied artifacts, user database (which holds
    # only a hash), its log.
    assert not _files_holding(auth_server.root, needles)
    assert not _files_holding(cache_dir, needles)
