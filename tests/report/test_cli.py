"""``python -m bayeslora.report`` in process on a synthetic store: files, logged run, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayeslora.report.cli import DEFAULT_EXPERIMENT, DEFAULT_OUTPUT_DIR, main
from tests.report.helpers import LABELS, bench_parent, probs_for, store, write_result


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    uri, tracker = store(tmp)
    with bench_parent(tracker):
        for seed in (0, 1):
            write_result(
                tracker,
                task="arc_easy",
                method="adamw",
                mode="adamw",
                seed=seed,
                probs=probs_for(seed, 1.0),
            )
            samples = torch.stack([probs_for(10 * seed + s, 2.0) for s in range(4)])
            taus = np.linspace(0, 1, 3)
            write_result(
                tracker,
                task="arc_easy",
                method="ivon",
                mode="ivon",
                seed=seed,
                probs=samples.mean(0),
                arrays={
                    "sample_probs.npz": {"probs": samples.numpy(), "labels": LABELS.numpy()},
                    "tau_probs.npz": {
                        "tau": taus,
                        "probs": np.stack([probs_for(seed, 3 - t).numpy() for t in taus]),
                        "labels": LABELS.numpy(),
                    },
                },
            )
    return uri, tmp


def test_report_writes_prints_and_logs(synthetic, capsys):
    uri, tmp = synthetic
    out = tmp / "report"
    assert main(["--tracking-uri", uri, "--output-dir", str(out), "--baseline", "adamw"]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("| mode ")
    assert "(2)" in printed.out and "arc_easy acc" in printed.out
    assert "difference to adamw on arc_easy" in printed.err
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"table.md", "table.csv", "comparison.json", "seeds.json", "curves.json"} <= names
    assert {
        "plots/reliability_arc_easy.png",
        "plots/tau_arc_easy.png",
        "plots/samples_arc_easy.png",
    } <= names
    import mlflow

    client = mlflow.tracking.MlflowClient(uri)
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id], "tags.`bayeslora.kind` = 'report'")
    logged = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"table.md", "table.csv", "selection.json", "plots"} <= logged
    # the report's own run is not a result: a second report reads the same results
    assert (
        main(["--tracking-uri", uri, "--output-dir", str(tmp / "again"), "--no-plots", "--no-log"])
        == 0
    )
    assert (tmp / "again" / "table.csv").read_text() == (out / "table.csv").read_text()
    assert not (tmp / "again" / "plots").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--experiment", "nope"], "no experiment 'nope'"),
        (["--task", "piqa"], "matches the selection tasks=piqa"),
        (["--metrics", "acc"], "unknown metric 'acc'"),
        (
            ["--baseline", "swag"],
            "--baseline swag: no selected result has that mode; choose one of adamw, ivon",
        ),
        (["--parent-run-id", "feed"], "--parent-run-id feed: no such run"),
    ],
)
def test_bad_input_exits_2_with_the_fix(synthetic, tmp_path, capsys, args, message):
    uri, _ = synthetic
    assert main(["--tracking-uri", uri, "--output-dir", str(tmp_path / "out"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written


def test_missing_or_unreachable_store_exits_2(tmp_path, capsys):
    assert main(["--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", "--no-log"]) == 2
    assert "run the bench first" in capsys.readouterr().err
    assert main(["--tracking-uri", "http://127.0.0.1:9", "--no-log"]) == 2
    assert "not reachable" in capsys.readouterr().err


def test_defaults_are_the_benchs():
    from bayeslora.bench.config import BenchConfig

    defaults = BenchConfig.__dataclass_fields__
    assert DEFAULT_OUTPUT_DIR == defaults["output_dir"].default
    assert DEFAULT_EXPERIMENT == defaults["experiment"].default
