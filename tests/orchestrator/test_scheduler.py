"""Grids on a real Ray cluster, logged to a real MLflow store, read back with MLflow's client.

One cluster (4 logical CPUs on this 2-core machine) serves the whole module; this process is
its driver, as ``gammaray submit --address`` would be.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator.tracking.replay import record_metrics
from orchestrator.tracking.status import grid_status, request_cancel
from orchestrator.worker import read_attempts
from tests.orchestrator.conftest import connected, fresh_store, start_cluster, submit, wait_for, write_grid
from trainers.callbacks import JsonlLogger, read_jsonl
from trainers.loop import read_summary

# Starts Ray clusters: one xdist worker runs every such module, one after another (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("ray")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster():
    ray_cluster = start_cluster(num_cpus=4, dashboard=True)
    try:
        with connected(ray_cluster.address):
            yield ray_cluster
    finally:
        ray_cluster.stop()


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def mlflow_runs(uri: str, grid: str) -> dict:
    """The grid's MLflow runs by gammaray run id, read with MLflow's own client."""
    mlflow = client(uri)
    experiment = mlflow.get_experiment_by_name(grid)
    assert experiment is not None
    runs = mlflow.search_runs([experiment.experiment_id], max_results=1000)
    return {run.data.tags["gammaray.run_id"]: run for run in runs}


def assert_metrics_match_jsonl(uri: str, run, out_dir: Path, resumed: bool = False) -> None:
    """Every metric of the run's JSONL copy is in MLflow once, with its step and value.

    After a resume, the steps between the checkpoint and the interruption were trained twice;
    MLflow keeps the first attempt's values for them: the same losses (the resume is exact) but
    not the same throughput, so throughput is then compared by step only.
    """
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in read_jsonl(out_dir / "metrics.jsonl"):
        for key, value, step in record_metrics(record):
            expected.setdefault(key, []).append((step, value))
    assert {"train/loss", "eval/loss", "tokens", "tokens_per_s"} <= set(expected)
    mlflow = client(uri)
    for key, points in expected.items():
        history = sorted((m.step, m.value) for m in mlflow.get_metric_history(run.info.run_id, key))
        if resumed and key in ("train/tokens_per_s", "tokens_per_s"):
            assert [step for step, _ in history] == sorted(step for step, _ in points), key
        else:
            assert history == sorted(points), key


def grid_folder(home: Path, grid: str) -> Path:
    return home / "grids" / grid


# ---- a four-run grid: everything logged, all four at once, nothing twice ---------------------


@pytest.fixture(scope="module")
def four(cluster, tmp_path_factory, mlflow_template):
    home = tmp_path_factory.mktemp("four")
    fresh_store(mlflow_template, home / "mlflow.db")
    path = write_grid(
        home,
        "four",
        base={"train.tokens": 40000},
        axes={"init.gamma": [0.5, 0.75, 1.0, 1.25]},
        resources={"cpus": 1},
        max_parallel=4,
    )
    outcome = submit(path, home, address=cluster.address)
    return home, path, outcome


def test_grid_finishes_and_mlflow_reads_every_run_back(four):
    home, _, outcome = four
    assert (
        outcome.counts["finished"] == 4
        and outcome.trained == 4
        and outcome.skipped == 0
        and outcome.tracking_ok
    )
    runs = mlflow_runs(outcome.tracking_uri, "four")
    assert set(runs) == set(outcome.states)
    mlflow = client(outcome.tracking_uri)
    for run_id, run in runs.items():
        folder = grid_folder(home, "four") / run_id
        summary = read_summary(folder)
        tags, params = run.data.tags, run.data.params
        assert (tags["gammaray.grid"], tags["gammaray.state"], tags["gammaray.run_id"]) == (
            "four",
            "finished",
            run_id,
        )
        assert run.info.status == "FINISHED"
        assert params["N"] == str(summary.n_params) and params["D"] == str(summary.tokens)
        assert params["FLOPs"] == str(summary.train_flops) and params["N_non_embedding"] == str(
            summary.n_params_non_embedding
        )
        assert params["model.preset"] == "tiny" and float(params["init.gamma"]) in (0.5, 0.75, 1.0, 1.25)
        assert params["train.threads"] == "1"  # one thread per allotted core
        assert run.data.metrics["eval/loss"] == pytest.approx(summary.final_eval_loss)
        assert_metrics_match_jsonl(outcome.tracking_uri, run, folder)
        artifacts = {a.path for a in mlflow.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "summary.json", "metrics.jsonl"} <= artifacts


def test_four_runs_trained_at_the_same_time(four):
    home, _, outcome = four
    starts, ends = [], []
    for run_id in outcome.states:
        folder = grid_folder(home, "four") / run_id
        starts.append(read_attempts(folder)[0]["time"])
        ends.append((folder / "summary.json").stat().st_mtime)
    assert max(starts) < min(ends)  # all four were training at once, each logging every metric


def test_runs_are_named_ray_tasks(four):
    from ray.util.state import list_tasks

    _, _, outcome = four
    wanted = {f"four/{run_id}" for run_id in outcome.states}
    # Workers report task events every second or so: wait for them to reach the state API.
    wait_for(lambda: wanted <= {task.name for task in list_tasks(limit=1000)}, 30, 0.5, "the tasks' names")


def test_analysis_reads_the_grid(four):
    from analysis.load import load_grid_runs

    home, _, outcome = four
    table = load_grid_runs("four", outcome.tracking_uri)
    assert len(table.finished) == 4
    for row in table.runs.itertuples():
        assert row.loss == pytest.approx(read_summary(grid_folder(home, "four") / row.run_id).final_eval_loss)
    assert table.default_by == ("init.gamma",)


def test_resubmit_trains_nothing_and_duplicates_nothing(four, cluster):
    home, path, outcome = four
    before = {r: len(read_attempts(grid_folder(home, "four") / r)) for r in outcome.states}
    started = time.monotonic()
    again = submit(path, home, address=cluster.address)
    assert time.monotonic() - started < 15
    assert (again.trained, again.skipped, again.counts["finished"]) == (0, 4, 4)
    assert {r: len(read_attempts(grid_folder(home, "four") / r)) for r in outcome.states} == before
    for run_id, run in mlflow_runs(outcome.tracking_uri, "four").items():
        assert_metrics_match_jsonl(outcome.tracking_uri, run, grid_folder(home, "four") / run_id)


def test_status_command_reads_the_store(four):
    from click.testing import CliRunner

    from orchestrator.cli.main import main

    _, _, outcome = four
    result = CliRunner().invoke(main, ["status", "four", "--tracking-uri", outcome.tracking_uri, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout.strip().splitlines()[-1])
    assert document["grid"] == "four" and document["tracking_uri"] == outcome.tracking_uri
    assert document["counts"]["finished"] == 4 and sum(document["counts"].values()) == 4
    assert {run["id"] for run in document["runs"]} == set(outcome.states)
    assert all(run["state"] == "finished" and run["loss"] > 0 for run in document["runs"])
    text = CliRunner().invoke(main, ["status", "four", "--tracking-uri", outcome.tracking_uri])
    assert "4 finished" in text.stdout


def test_status_of_an_unknown_grid_is_one_line(four):
    from click.testing import CliRunner

    from orchestrator.cli.main import main

    _, _, outcome = four
    result = CliRunner().invoke(main, ["status", "nope", "--tracking-uri", outcome.tracking_uri])
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == f"gammaray: error: unknown grid 'nope' in {outcome.tracking_uri} (grids there: four)"
    )


# ---- faults -----------------------------------------------------------------------------------


def test_sigkilled_worker_resumes_from_its_checkpoint_with_the_same_final_loss(
    cluster, tmp_path, mlflow_template
):
    fresh_store(mlflow_template, tmp_path / "mlflow.db")
    from trainers.loop import train

    path = write_grid(tmp_path, "kill", base={"train.tokens": 60000}, resources={"cpus": 1}, retries=2)
    killed: dict = {}

    def kill_after_first_checkpoint() -> None:
        folder = wait_for(
            lambda: next(iter(grid_folder(tmp_path, "kill").glob("*")), None), 120, what="run folder"
        )
        wait_for(lambda: list((folder / "checkpoints").glob("step-*")), 120, what="a checkpoint")
        killed["pid"] = read_attempts(folder)[0]["pid"]
        os.kill(killed["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    outcome = submit(path, tmp_path, address=cluster.address)
    killer.join()
    [(run_id, state)] = outcome.states.items()
    assert state == "finished"
    folder = grid_folder(tmp_path, "kill") / run_id
    attempts = read_attempts(folder)
    assert [a["attempt"].split(":")[1] for a in attempts] == ["1", "2"] and attempts[0]["pid"] == killed[
        "pid"
    ] != attempts[1]["pid"]
    start = [r for r in read_jsonl(folder / "metrics.jsonl") if r["kind"] == "start"][-1]
    assert start["step"] > 0  # the retry resumed from a checkpoint, not from scratch

    # The same config trained without interruption ends with the same loss.
    spec_config = __import__("trainers.config", fromlist=["load_run_config"]).load_run_config(
        folder / "config.yaml"
    )
    reference = train(spec_config, tmp_path / "reference")
    assert read_summary(folder).final_eval_loss == reference.final_eval_loss
    run = mlflow_runs(outcome.tracking_uri, "kill")[run_id]
    assert run.data.tags["gammaray.attempts"] == "2"
    assert_metrics_match_jsonl(outcome.tracking_uri, run, folder, resumed=True)


def _train_steps(folder: Path) -> list[int]:
    path = folder / "metrics.jsonl"
    return [r["step"] for r in read_jsonl(path) if r["kind"] == "train"] if path.is_file() else []


def test_a_preempted_worker_is_launched_again_without_counting_a_retry(cluster, tmp_path, mlflow_template):
    fresh_store(mlflow_template, tmp_path / "mlflow.db")
    from trainers.config import load_run_config
    from trainers.loop import train

    # No retries, and no checkpoint of its own: only the preemption's can save the run.
    base = {"train.tokens": 100000, "train.checkpoint_every": 100000}
    path = write_grid(tmp_path, "preempt", base=base, resources={"cpus": 1}, retries=0)
    sent: dict = {}

    def preempt_mid_run() -> None:
        folder = wait_for(
            lambda: next(iter(grid_folder(tmp_path, "preempt").glob("*")), None), 120, what="run folder"
        )
        wait_for(lambda: any(step >= 50 for step in _train_steps(folder)), 120, what="50 steps")
        sent["pid"] = read_attempts(folder)[0]["pid"]
        os.kill(sent["pid"], signal.SIGTERM)  # as a node's preemption or an eviction would

    sender = threading.Thread(target=preempt_mid_run)
    sender.start()
    outcome = submit(path, tmp_path, address=cluster.address)
    sender.join()
    [(run_id, state)] = outcome.states.items()
    assert state == "finished"
    folder = grid_folder(tmp_path, "preempt") / run_id
    assert [a["attempt"].split(":")[1] for a in read_attempts(folder)] == ["1", "1.1"]
    stopped_at = [r for r in read_jsonl(folder / "metrics.jsonl") if r["kind"] == "start"][-1]["step"]
    assert stopped_at >= 50  # the second launch resumed from the preemption's checkpoint
    reference = train(load_run_config(folder / "config.yaml"), tmp_path / "reference")
    assert read_summary(folder).final_eval_loss == reference.final_eval_loss
    assert mlflow_runs(outcome.tracking_uri, "preempt")[run_id].data.tags["gammaray.attempts"] == "1"


def test_a_driver_stopped_by_sigterm_checkpoints_its_runs_and_a_resubmit_resumes_them(
    cluster, tmp_path, mlflow_template
):
    uri = fresh_store(mlflow_template, tmp_path / "mlflow.db")
    base = {"train.tokens": 100000, "train.checkpoint_every": 100000}
    path = write_grid(tmp_path, "term", base=base, resources={"cpus": 1})
    env = {**os.environ, "GAMMARAY_HOME": str(tmp_path)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "submit", str(path), "--address", cluster.address],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        folder = wait_for(
            lambda: next(iter(grid_folder(tmp_path, "term").glob("*")), None), 120, what="run folder"
        )
        wait_for(lambda: any(step >= 50 for step in _train_steps(folder)), 120, what="50 steps")
        driver.send_signal(signal.SIGTERM)
        stderr = driver.communicate(timeout=60)[1]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    checkpoints = sorted((folder / "checkpoints").glob("step-*"))
    assert checkpoints and int(checkpoints[-1].name.removeprefix("step-")) == _train_steps(folder)[-1]
    [run] = grid_status(uri, "term")["runs"]
    assert run["state"] == "cancelled" and "stopped at a checkpoint of its last step" in run["reason"]

    outcome = submit(path, tmp_path, address=cluster.address)
    assert outcome.counts["finished"] == 1
    start = [r for r in read_jsonl(folder / "metrics.jsonl") if r["kind"] == "start"][-1]
    assert start["step"] == int(checkpoints[-1].name.removeprefix("step-"))


def test_wsd_branches_equal_their_runs_trained_alone_and_a_killed_trunk_keeps_them(
    cluster, tmp_path, mlflow_template
):
    fresh_store(mlflow_template, tmp_path / "mlflow.db")
    from trainers.config import load_run_config
    from trainers.loop import train

    # A family of three: 150, 300 and 1,200 steps; the branches start at steps 135 and 270, and the
    # trunk runs long enough after them to be killed once the first branch has finished.
    base = {
        "optim.schedule": "wsd",
        "optim.warmup_tokens": 2560,
        "optim.decay_fraction": 0.1,
    }
    axes = {"train.tokens": [38400, 76800, 307200]}
    path = write_grid(tmp_path, "wsd", base=base, axes=axes, branch={"over": "train.tokens"}, retries=1)
    folder = grid_folder(tmp_path, "wsd")
    killed: dict = {}

    def kill_the_trunk_once_the_first_branch_is_done() -> None:
        done = lambda: [r for r in folder.glob("*") if (r / "summary.json").is_file()]  # noqa: E731
        wait_for(done, 180, what="the first branch to finish")
        configs = [r / "config.yaml" for r in folder.glob("*") if (r / "config.yaml").is_file()]
        [trunk] = [c.parent for c in configs if "tokens: 307200" in c.read_text()]
        assert not (trunk / "summary.json").is_file(), "the trunk finished before it could be killed"
        killed["trunk"], killed["pid"] = trunk.name, read_attempts(trunk)[0]["pid"]
        os.kill(killed["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_the_trunk_once_the_first_branch_is_done)
    killer.start()
    outcome = submit(path, tmp_path, address=cluster.address)
    killer.join()
    assert set(outcome.states.values()) == {"finished"}
    runs = {read_summary(folder / r).steps: folder / r for r in outcome.states}
    assert "trunk" in killed, "the trunk finished before the first branch did: nothing was killed"
    assert killed["trunk"] == runs[1200].name and len(read_attempts(runs[1200])) == 2
    assert sorted(p.name for p in (runs[1200] / "checkpoints").glob("step-*"))[:2] == [
        "step-00000135",
        "step-00000270",
    ]  # the branch points, kept beside the newest checkpoints
    for steps, start in ((150, 135), (300, 270)):
        assert len(read_attempts(runs[steps])) == 1  # the trunk's death did not retrain a branch
        starts = [r["step"] for r in read_jsonl(runs[steps] / "metrics.jsonl") if r["kind"] == "start"]
        assert starts == [start]  # it trained its decay only
    for steps, run in runs.items():  # each run equals its config.yaml trained alone
        reference = tmp_path / "alone" / str(steps)
        alone = train(
            load_run_config(run / "config.yaml"), reference, [JsonlLogger(reference / "metrics.jsonl")]
        )
        assert read_summary(run).final_eval_loss == alone.final_eval_loss, steps
        losses = lambda f: {  # noqa: E731
            r["step"]: r["train/loss"] for r in read_jsonl(f / "metrics.jsonl") if r["kind"] == "train"
        }
        assert losses(run) == losses(reference), steps

    # The store says which runs are branches, and the report's method says so too.
    tags = {run_id: run.data.tags for run_id, run in mlflow_runs(outcome.tracking_uri, "wsd").items()}
    assert tags[runs[150].name]["gammaray.branch"] == f"{runs[1200].name}@135"
    assert tags[runs[300].name]["gammaray.branch"] == f"{runs[1200].name}@270"
    assert "gammaray.branch" not in tags[runs[1200].name]
    from analysis.analyze import analyze
    from analysis.load import load_grid_runs
    from analysis.report.scaling import render_report

    html = render_report(analyze(load_grid_runs("wsd", outcome.tracking_uri), n_bootstrap=0))
    assert "2 of the 3 runs were WSD branches" in html


def test_failed_and_diverged_runs_do_not_stop_the_grid(cluster, tmp_path, mlflow_template):
    fresh_store(mlflow_template, tmp_path / "mlflow.db")
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(os.urandom(200_000))
    path = write_grid(
        tmp_path,
        "faults",
        zip=[
            {
                "optim.lr": [3e-3, 1e6, 3e-3],
                "data.source": ["synthetic", "synthetic", "text"],
                "data.path": [None, None, str(corpus)],
            }
        ],
        base={"optim.grad_clip": 0.0},
        resources={"cpus": 1},
        retries=2,
    )
    # The text file disappears between planning and training: the run fails at run time.
    outcome = submit(path, tmp_path, address=cluster.address, plan_hook=lambda _: corpus.unlink())
    assert sorted(outcome.states.values()) == ["diverged", "failed", "finished"]
    runs = mlflow_runs(outcome.tracking_uri, "faults")
    by_state = {run.data.tags["gammaray.state"]: run for run in runs.values()}
    assert by_state["diverged"].data.tags["gammaray.reason"].startswith("loss not finite at step")
    assert "no such file" in by_state["failed"].data.tags["gammaray.reason"]
    assert by_state["failed"].data.tags["gammaray.attempts"] == "1"  # an exception is not retried
    assert by_state["failed"].info.status == "FAILED"


def test_cancel_stops_a_running_grid(cluster, tmp_path, mlflow_template):
    uri = fresh_store(mlflow_template, tmp_path / "mlflow.db")
    path = write_grid(
        tmp_path, "stop", base={"train.tokens": 5_000_000}, axes={"seed": [1, 2]}, resources={"cpus": 1}
    )
    result: dict = {}
    driver = threading.Thread(
        target=lambda: result.update(outcome=submit(path, tmp_path, address=cluster.address))
    )
    driver.start()
    try:
        wait_for(lambda: _counts(uri, "stop").get("running") == 2, 120, 0.5, "two running runs")
        pids = [read_attempts(folder)[0]["pid"] for folder in grid_folder(tmp_path, "stop").iterdir()]
        assert len(request_cancel(uri, "stop")) == 2
        driver.join(timeout=60)
        assert not driver.is_alive()
    finally:
        if driver.is_alive():  # do not leave a driver training on the shared cluster
            request_cancel(uri, "stop")
            driver.join(timeout=60)
    assert set(result["outcome"].states.values()) == {"cancelled"}
    for pid in pids:
        wait_for(lambda pid=pid: not _alive(pid), 30, what=f"worker {pid} to exit")
    document = grid_status(uri, "stop")
    assert document["counts"]["cancelled"] == 2
    assert {run["reason"] for run in document["runs"]} == {"cancelled by request"}


def _counts(uri: str, grid: str) -> dict:
    from orchestrator.errors import TrackingError

    try:
        return grid_status(uri, grid)["counts"]
    except TrackingError:  # the driver has not created the grid's experiment yet
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def test_killed_driver_then_resubmit_loses_nothing(cluster, tmp_path, mlflow_template):
    fresh_store(mlflow_template, tmp_path / "mlflow.db")
    path = write_grid(
        tmp_path, "crash", axes={"train.tokens": [20000, 40000]}, resources={"cpus": 1}, max_parallel=1
    )
    env = {**os.environ, "GAMMARAY_HOME": str(tmp_path)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "submit", str(path), "--address", cluster.address, "--json"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    folder = grid_folder(tmp_path, "crash")

    def one_done_and_one_checkpointed() -> bool:
        runs = list(folder.glob("*")) if folder.exists() else []
        done = [r for r in runs if (r / "summary.json").exists()]
        return bool(done) and any(list((r / "checkpoints").glob("step-*")) for r in runs if r not in done)

    try:
        wait_for(one_done_and_one_checkpointed, 180, 0.05, "a finished run and a checkpointed one")
    finally:
        driver.kill()
        driver.wait()
    finished_before = {r.name for r in folder.iterdir() if (r / "summary.json").exists()}
    attempts_before = {r: len(read_attempts(folder / r)) for r in finished_before}
    # Largest first, one at a time (max_parallel 1): the 40k-token run ran, alone, before the other.
    [first] = finished_before
    assert read_summary(folder / first).tokens > 20000
    [second] = [r.name for r in folder.iterdir() if r.name != first]
    assert read_attempts(folder / second)[0]["time"] >= (folder / first / "summary.json").stat().st_mtime - 1

    outcome = submit(path, tmp_path, address=cluster.address)
    assert outcome.counts["finished"] == 2 and outcome.skipped == len(finished_before) == 1
    assert outcome.trained == 1
    assert {r: len(read_attempts(folder / r)) for r in finished_before} == attempts_before  # not retrained
    resumed = [r for r in outcome.states if r not in finished_before]
    starts = [
        [x for x in read_jsonl(folder / r / "metrics.jsonl") if x["kind"] == "start"][-1]["step"]
        for r in resumed
    ]
    assert max(starts) > 0  # the interrupted run went on from its checkpoint
    for run_id, run in mlflow_runs(outcome.tracking_uri, "crash").items():
        assert run.data.tags["gammaray.state"] == "finished"
        assert_metrics_match_jsonl(outcome.tracking_uri, run, folder / run_id, resumed=True)


def test_a_grid_too_big_for_the_cluster_is_refused_before_anything_is_written(cluster, tmp_path):
    from orchestrator.errors import GridError

    path = write_grid(tmp_path, "big", resources={"cpus": 8})  # the cluster's nodes have 4 CPUs
    with pytest.raises(
        GridError,
        match=r"resources.cpus: 8 per process, but the largest node of the Ray cluster at .* has 4 CPUs",
    ):
        submit(path, tmp_path, address=cluster.address)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "grids").exists()


# ---- a multi-process DeepSpeed run as a gang ---------------------------------------------------


def test_deepspeed_gangs_are_fresh_processes_and_branch_from_deepspeed_checkpoints(
    cluster, tmp_path, mlflow_template
):
    from trainers.config import load_run_config
    from trainers.launch import run_local

    fresh_store(mlflow_template, tmp_path / "mlflow.db")
    # A WSD family of two gangs: the 20-step run branches from the 40-step trunk's ZeRO checkpoint
    # at step 15, the start of its decay.
    path = write_grid(
        tmp_path,
        "gang",
        base={
            "train.backend": "deepspeed",
            "train.zero_stage": 1,
            "optim.schedule": "wsd",
            "optim.warmup_tokens": 1280,
            "optim.decay_fraction": 0.25,
        },
        axes={"train.tokens": [5120, 10240]},
        branch={"over": "train.tokens"},
        resources={"cpus": 1, "processes": 2},
        max_parallel=1,  # one gang after the other: the second must not reuse the first's processes
    )
    outcome = submit(path, tmp_path, address=cluster.address)
    assert set(outcome.states.values()) == {"finished"}
    pids = set()
    runs = {}
    for run_id in outcome.states:
        folder = grid_folder(tmp_path, "gang") / run_id
        runs[read_summary(folder).steps] = folder
        attempts = read_attempts(folder)
        assert sorted(a["rank"] for a in attempts) == [0, 1]
        pids |= {a["pid"] for a in attempts}
        run = mlflow_runs(outcome.tracking_uri, "gang")[run_id]
        assert run.data.params["train.processes"] == "2"
        assert_metrics_match_jsonl(outcome.tracking_uri, run, folder)
    assert len(pids) == 4  # DeepSpeed's process-wide state never meets a second run

    branch = runs[20]
    assert [r["step"] for r in read_jsonl(branch / "metrics.jsonl") if r["kind"] == "start"] == [15]
    alone = tmp_path / "alone"
    trained_alone = run_local(
        load_run_config(branch / "config.yaml"), alone, [JsonlLogger(alone / "metrics.jsonl")]
    )
    assert read_summary(branch).final_eval_loss == trained_alone.final_eval_loss
    losses = lambda f: {  # noqa: E731
        r["step"]: r["train/loss"] for r in read_jsonl(f / "metrics.jsonl") if r["kind"] == "train"
    }
    # The records before step 15 are the trunk's, at the trunk's eval cadence: a subset of the steps.
    assert losses(branch) == {step: losses(alone)[step] for step in losses(branch)}


def test_one_process_deepspeed_runs_get_fresh_workers(cluster, tmp_path, mlflow_template):
    fresh_store(mlflow_template, tmp_path / "mlflow.db")
    path = write_grid(
        tmp_path,
        "solo-deepspeed",
        base={"train.backend": "deepspeed", "train.zero_stage": 2, "train.tokens": 8000},
        axes={"init.gamma": [0.5, 1.0]},
        resources={"cpus": 1},
        max_parallel=1,
    )
    outcome = submit(path, tmp_path, address=cluster.address)
    assert set(outcome.states.values()) == {"finished"}, outcome.states
    folders = [grid_folder(tmp_path, "solo-deepspeed") / run_id for run_id in outcome.states]
    assert len({read_attempts(folder)[0]["pid"] for folder in folders}) == 2
