"""Multi-process training on CPU: torchrun with DDP and FSDP2 (gloo), distributed Muon, resume
under torchrun, per-rank logs, and the launcher configs (joblib runs a real 2-job sweep).

The runs are tiny (2 layers, 64-wide, 20 steps) and every process uses one thread, so the two
ranks of a torchrun run share the 2 CI cores without oversubscription.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gpt5_ablate.optim.muon import Muon
from gpt5_ablate.train.distributed import DistContext, agree_on_run_dir

# Hydra, MLflow and the CLI are imported inside the tests: the Muon test's spawned processes
# import this module, and on 2 cores those imports would cost them several seconds each.

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parent.parent
STEPS = 20


def run_overrides() -> list[str]:
    """Shared by every run below, so the runs of one comparison differ only in how they are
    launched. No samples: they add time, not coverage."""
    from tests.train_helpers import TINY_OVERRIDES

    return [
        *TINY_OVERRIDES,
        f"trainer.max_steps={STEPS}",
        "trainer.eval_every=10",
        "trainer.checkpoint_every=10",
        "trainer.num_threads=1",
        "trainer.num_samples=0",
    ]


GLOBAL_BATCH = 16  # sequences per step: 1 process x 16, or 2 ranks x 8
# DDP all-reduces (averages) the gradients of two 8-sequence halves, where one process takes the
# mean over 16 at once: the same value up to float32 rounding (~1e-7 relative), amplified a
# little over 20 optimizer steps. FSDP2 also reduce-scatters the gradients and gathers
# parameters in pieces, a different order of the same sums: the same tolerance holds (measured:
# <= 1e-7 for both), set at 1e-4 (DDP) and 2e-4 (FSDP) to leave room for other BLAS builds.
TOLERANCE = {"ddp": 1e-4, "fsdp": 2e-4}


# --- helpers ------------------------------------------------------------------------------------


def torchrun_command(args: list[str], nproc: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "gpt5_ablate",
        *args,
    ]


def child_env() -> dict[str, str]:
    # One thread per process: 2 ranks on 2 cores. PYTHONPATH: the package without installing.
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}


def run_torchrun(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        torchrun_command(args),
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_args(cache_dir: Path, uri: str, experiment: str, *extra: str) -> list[str]:
    return [
        *run_overrides(),
        f"cache_dir={cache_dir}",
        f"tracking.uri={uri}",
        f"tracking.experiment={experiment}",
        *extra,
    ]


def experiment_runs(uri: str, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found is not None else []


def curves(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return {
        key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        for key in ("train/loss", "val/loss", "val/accuracy")
    }


def max_relative_difference(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> float:
    assert [s for s, _ in a] == [s for s, _ in b], "the step lists differ"
    return max(abs(x - y) / max(abs(x), 1e-12) for (_, x), (_, y) in zip(a, b, strict=True))


def assert_matches_reference(uri: str, run_id: str, reference: dict, tolerance: float) -> None:
    got = curves(uri, run_id)
    assert [s for s, _ in got["train/loss"]] == list(range(5, STEPS + 1, 5))
    assert [s for s, _ in got["val/loss"]] == list(range(0, STEPS + 1, 10))
    for key, expected in reference.items():
        difference = max_relative_difference(expected, got[key])
        print(f"{key}: max relative difference {difference:.2e}")
        assert difference <= tolerance, f"{key}: {difference:.2e} > {tolerance}"


def only_run_dir(root: Path, experiment: str) -> Path:
    dirs = [p for p in (root / "outputs" / experiment).iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict:
    """One process, global batch 16 (it also fills the shared data cache for the runs after)."""
    from tests.train_helpers import run_cli

    root = tmp_path_factory.mktemp("single")
    uri = f"sqlite:///{root}/mlflow.db"
    proc = run_cli(
        run_args(cache_dir, uri, "single", f"trainer.micro_batch_size={GLOBAL_BATCH}"),
        cwd=root,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = experiment_runs(uri, "single")
    assert run.data.params["world_size"] == "1"
    return curves(uri, run.info.run_id)


# --- torchrun: DDP and FSDP2, stopped and resumed, match one process ------------------------------


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_rank_run_resumes_and_matches_one_process_with_the_same_global_batch(
    parallel: str, tmp_path: Path, cache_dir: Path, reference: dict
) -> None:
    """One 2-rank torchrun run, stopped after its first checkpoint and re-run to the end (one test,
    not two: each torchrun launch costs ~10 s of imports on 2 cores). The finished MLflow run must
    hold every step, with the values of the uninterrupted single-process run."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = run_args(
        cache_dir,
        uri,
        parallel,
        f"trainer.micro_batch_size={GLOBAL_BATCH // 2}",
        f"trainer.parallel={parallel}",
        "trainer.checkpoint_every=5",
    )
    proc = subprocess.Popen(
        torchrun_command(args),
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # SIGTERM to torchrun, as a scheduler ends a job: torchrun passes it on to both ranks,
        # which agree on the step to stop at, checkpoint it and exit.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if list((tmp_path / "outputs" / parallel).glob("*/checkpoints/latest")):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    run_dir = only_run_dir(tmp_path, parallel)
    stopped_at = int((run_dir / "checkpoints" / "latest").read_text().strip().split("_")[1])
    assert 0 < stopped_at < STEPS, f"stopped at step {stopped_at}:\n{err[-3000:]}"
    (first,) = experiment_runs(uri, parallel)
    assert first.info.status == "KILLED", err[-3000:]

    proc2 = run_torchrun(args, cwd=tmp_path)
    assert proc2.returncode == 0, proc2.stderr[-4000:]
    assert f"Resuming from {run_dir / 'checkpoints' / f'step_{stopped_at:07d}'}" in proc2.stderr
    runs = experiment_runs(uri, parallel)
    assert len(runs) == 1, "only rank 0 logs, and the re-run logs into the stopped run"
    run = runs[0]
    assert run.info.run_id == first.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "2"
    assert run.data.params["parallel"] == parallel
    # tokens_per_step counts the global batch: the same as the single process's.
    assert run.data.params["tokens_per_step"] == str(GLOBAL_BATCH * 64)
    assert_matches_reference(uri, run.info.run_id, reference, TOLERANCE[parallel])

    # Both ranks worked in rank 0's run dir (the only one), each with its own Hydra log.
    assert run.data.tags["run_dir"] == str(run_dir.resolve())
    assert (run_dir / "cli_rank0.log").is_file()
    assert (run_dir / "cli_rank1.log").is_file()
    assert not (run_dir / "cli.log").exists()
    checkpoint = run_dir / "checkpoints" / f"step_{STEPS:07d}"
    assert (checkpoint / "model.safetensors").is_file()  # FSDP too: consolidated weights
    assert (checkpoint / "dcp").is_dir() == (parallel == "fsdp")
    assert not list((run_dir / "checkpoints").glob(".*partial"))


# --- distributed Muon (and the run dir agreement) ----------------------------------------------

MUON_SHAPES = [(16, 32), (16, 32), (16, 32), (32, 16), (8, 8), (16, 32), (24, 8)]


def make_params_and_grads(step: int) -> tuple[list[torch.nn.Parameter], list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in MUON_SHAPES]
    grad_generator = torch.Generator().manual_seed(100 + step)
    grads = [torch.randn(s, generator=grad_generator) for s in MUON_SHAPES]
    return params, grads


def muon_steps(params: list[torch.nn.Parameter], n_steps: int = 3) -> list[torch.Tensor]:
    # Two groups, so the rotation of matrix owners across groups is exercised too.
    optimizer = Muon(
        [{"params": params[:4]}, {"params": params[4:], "lr": 0.01}],
        lr=0.02,
        weight_decay=0.1,
        ns_dtype="fp32",
    )
    for step in range(n_steps):
        for p, g in zip(params, make_params_and_grads(step)[1], strict=True):
            p.grad = g.clone()
        optimizer.step()
    return [p.detach().clone() for p in params]


def _muon_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        params, _ = make_params_and_grads(0)
        result = muon_steps(params)
        ctx = DistContext("ddp", rank, rank, world_size)
        run_dir = agree_on_run_dir(ctx, Path(f"/runs/differs-on-rank-{rank}"))
        torch.save({"params": result, "run_dir": str(run_dir)}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_muon_updates_are_identical_across_ranks_and_match_one_process(
    tmp_path: Path,
) -> None:
    world_size = 2
    mp.spawn(
        _muon_worker,
        args=(world_size, str(tmp_path / "init"), str(tmp_path)),
        nprocs=world_size,
        join=True,
    )
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world_size)]
    params, _ = make_params_and_grads(0)
    single = muon_steps(params)
    initial, _ = make_params_and_grads(0)
    for a, b, expected, start in zip(
        results[0]["params"], results[1]["params"], single, initial, strict=True
    ):
        assert torch.equal(a, b), "ranks must apply bitwise-identical updates"
        assert not torch.allclose(a, start), "every matrix was updated"
        # Each rank orthogonalises a different batch of matrices than the single process does:
        # batched matmuls may round differently, nothing more.
        torch.testing.assert_close(a, expected, rtol=1e-5, atol=1e-6)
    # Every rank adopts rank 0's run dir.
    assert {r["run_dir"] for r in results} == {"/runs/differs-on-rank-0"}


# --- launcher configs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("launcher", "target", "key", "value"),
    [
        ("basic", "BasicLauncher", None, None),
        ("joblib", "JoblibLauncher", "n_jobs", 2),
        ("submitit_slurm", "SlurmLauncher", "gpus_per_node", 1),
    ],
)
def test_launcher_configs_compose(launcher: str, target: str, key: str | None, value: int) -> None:
    from hydra import compose, initialize_config_dir

    from gpt5_ablate.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[f"launcher={launcher}", "attention=mla"],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_.endswith(target)
    assert cfg.hydra.runtime.choices["hydra/launcher"] == launcher
    if key is not None:
        assert cfg.hydra.launcher[key] == value
    assert cfg.attention.name == "mla"
    assert "launcher" not in cfg  # a Hydra setting only: not in the run's config or params


def test_joblib_launcher_runs_a_parallel_sweep(tmp_path: Path, cache_dir: Path) -> None:
    from tests.train_helpers import TINY_OVERRIDES, run_cli

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [
        "-m",
        "launcher=joblib",
        "attention=gqa,mla",
        *TINY_OVERRIDES,
        "trainer.max_steps=10",
        "trainer.eval_every=10",
        "trainer.num_threads=1",
        "trainer.num_samples=0",
        f"cache_dir={cache_dir}",
        f"tracking.uri={uri}",
        "tracking.experiment=joblib",
    ]
    proc = run_cli(args, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr  # Hydra logs the launch
    # Jobs ran in worker processes; their outcomes still reach the launching process's summary.
    assert "Sweep summary: 2/2 runs finished, 0 failed." in proc.stderr
    runs = experiment_runs(uri, "joblib")
    children = [r for r in runs if r.data.tags.get("sweep_parent") != "true"]
    parents = [r for r in runs if r.data.tags.get("sweep_parent") == "true"]
    assert len(children) == 2
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["attention"] for r in children} == {"gqa", "mla"}
    # The sweep id and parent run, set as environment variables by the sweep callback in the
    # launching process, reached the joblib worker processes.
    assert len({r.data.tags["sweep_id"] for r in children}) == 1
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
