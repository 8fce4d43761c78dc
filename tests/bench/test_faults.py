"""Faults during a bench: a diverging cell, a process killed outright, a tracking server
that stops, two processes on one store. Each must leave the finished results intact and
say what happened."""

from __future__ import annotations

import json

import pytest

from bayeslora.bench.cli import main
from tests.bench.test_cli import TINY


def _runs(out):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["bayeslora"], output_format="list")


def test_a_diverging_cell_fails_with_its_reason_and_the_others_go_on(tmp_path, capsys):
    # AdamW at lr 1e30 overflows the adapter within a few steps: the loss becomes NaN.
    code = main(
        [
            *TINY,
            "--methods",
            "adamw,ivon",
            "--hp",
            "adamw.lr=1e30",
            "--hp",
            "ivon.test_samples=2",
            "--output-dir",
            str(tmp_path),
            "--no-save-adapters",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1  # some cells failed
    failed_line = next(line for line in out.splitlines() if line.startswith("adamw "))
    assert "FAILED DivergedError: training loss became nan at step" in failed_line
    assert "Traceback" not in err  # a divergence is a result, not a bug
    # the baseline (the first method) failed: its comparisons are missing, not replaced
    assert "missing: no adamw result for seed 0 (it failed)" in err
    assert "difference to ivon" not in err

    runs = _runs(tmp_path)
    (adamw,) = [r for r in runs if r.data.tags.get("bayeslora.method") == "adamw"]
    assert adamw.info.status == "FAILED"
    assert "training loss became nan at step" in adamw.data.tags["bayeslora.error"]
    ivon = [r for r in runs if r.data.tags.get("bayeslora.method") == "ivon"]
    assert sorted(r.data.tags["bayeslora.mode"] for r in ivon) == ["ivon", "ivon@mean"]
    assert all(r.info.status == "FINISHED" for r in ivon)
    (results_txt,) = tmp_path.glob("bench-*/results.txt")
    assert "FAILED DivergedError" in results_txt.read_text()
    capsys.readouterr()
    assert main(["--explain", adamw.info.run_id, "--output-dir", str(tmp_path)]) == 0
    explained = capsys.readouterr().out
    assert ": FAILED\n  error: DivergedError: training loss became nan at step" in explained


def test_comparisons_keep_their_baseline_when_it_is_missing_for_a_seed():
    import torch

    from bayeslora.bench.results import ResultRow
    from bayeslora.report.comparison import compare_to_baseline

    def row(mode, seed):
        return ResultRow(mode, mode, "t", seed, "k", {}, 0.0, 0.0, "r")

    probs, labels = torch.full((6, 2), 0.5), torch.tensor([0, 1, 0, 1, 0, 1])
    results = [(row("a", 0), probs), (row("b", 0), probs), (row("b", 1), probs)]
    comparisons = compare_to_baseline(results, labels, "a", n_resamples=10)
    assert [(c["seed"], "missing" in c, c["baseline"]) for c in comparisons] == [
        (0, False, "a"),
        (1, True, "a"),
    ]
    assert json.dumps(comparisons)  # stays loggable
    assert pytest.approx(comparisons[0]["accuracy"]["diff"]) == 0.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 over a SQLite store in ``root``."""

    def __init__(self, root):
        self.root, self.port = root, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> None:
        import subprocess
        import sys
        import time
        import urllib.request

        mlflow = [sys.executable, "-c", "from mlflow.cli import cli; cli()"]
        self.process = subprocess.Popen(
            [
                *mlflow,
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'server.db'}",
                "--artifacts-destination",
                str(self.root / "server-artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its workers die with it
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("mlflow server did not start")

    def stop(self) -> None:
        import os
        import signal

        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("when", ["while the second cell trains", "between the cells"])
def test_a_tracking_server_that_dies_mid_run_stops_the_run_and_loses_nothing_finished(
    when, tmp_path, mlflow_server, monkeypatch, capsys
):
    import time

    import bayeslora.bench.runner as runner

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # the test need not wait 15 s
    args = [
        *TINY,
        "--methods",
        "adamw,ivon",
        "--hp",
        "ivon.test_samples=2",
        "--tracking-uri",
        mlflow_server.uri,
        "--output-dir",
        str(tmp_path / "out"),
        "--no-save-adapters",
    ]
    # adamw's cell is stored; then the server dies, before ivon's cell is looked up again
    # (between the cells) or while it trains
    patched = "run_cell" if when == "while the second cell trains" else "_complete_cell"
    real, calls = getattr(runner, patched), []

    def lose_the_server_on_the_second_cell(*a, **kw):
        calls.append(1)
        if patched == "run_cell" and len(calls) == 2:
            mlflow_server.stop()
        done = real(*a, **kw)
        if patched == "_complete_cell" and len(calls) == 1:
            mlflow_server.stop()
        return done

    monkeypatch.setattr(runner, patched, lose_the_server_on_the_second_cell)
    start = time.monotonic()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 3, err[-3000:]
    assert time.monotonic() - start < 120
    message = err[err.index("error: the tracking store") :]
    assert f"{mlflow_server.uri} stopped answering while ivon/arc_easy/seed0" in message
    assert "the 1 result(s) that finished before are in the store" in message
    assert "run the same command" in message
    (results,) = (tmp_path / "out").glob("bench-*/results.jsonl")
    assert [json.loads(line)["mode"] for line in results.read_text().splitlines()] == ["adamw"]

    mlflow_server.start()  # same store
    monkeypatch.setattr(runner, patched, real)
    code = main(args)
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert "2 cell(s): 1 finished earlier (reused from the store), 1 to run" in err
    import mlflow

    mlflow.set_tracking_uri(mlflow_server.uri)
    runs = mlflow.search_runs(experiment_names=["bayeslora"], output_format="list")
    finished = [
        r.data.tags["bayeslora.mode"]
        for r in runs
        if r.data.tags.get("bayeslora.kind") == "result" and r.info.status == "FINISHED"
    ]
    assert sorted(finished) == ["adamw", "ivon", "ivon@mean"]  # each once
