"""The README's plugin example, taken from the README text, installed with pip as a user
would, and run through the CLI: listing, a bench with evaluation during training, the
embedded preset's learning-rate scaling."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_helpers import TINY_RUN, bench_subprocess

README = Path(__file__).parents[2] / "README.md"


def _block(language: str, first_line: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)
    (block,) = [b for b in blocks if b.startswith(first_line)]
    return block


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The example package, pip-installed into a directory of its own."""
    root = tmp_path_factory.mktemp("plugin")
    package = root / "bayeslora-sgd"
    package.mkdir()
    (package / "bayeslora_sgd.py").write_text(_block("python", "# bayeslora_sgd.py"))
    (package / "pyproject.toml").write_text(_block("toml", "# pyproject.toml"))
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "--target", str(target), str(package)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def test_the_example_is_about_forty_lines():
    assert len(_block("python", "# bayeslora_sgd.py").splitlines()) <= 45


def test_the_installed_example_is_listed_as_a_plugin(site, tmp_path):
    listing = bench_subprocess(["--list-methods"], tmp_path, pythonpath=site)
    assert listing.returncode == 0, listing.stderr
    (line,) = [line for line in listing.stdout.splitlines() if line.startswith("sgd ")]
    assert "plugin bayeslora-sgd 0.1.0" in line and "SGD and momentum" in line


def test_the_installed_example_runs_with_curves_and_evaluation(site, tmp_path):
    out = tmp_path / "out"
    args = ["--methods", "adamw,sgd", *TINY_RUN, "--eval-every", "2", "--output-dir", str(out)]
    run = bench_subprocess([*args, "--hp", "sgd.momentum=0.5"], tmp_path, pythonpath=site)
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"^sgd\s+arc_easy", run.stdout, re.M)

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    (sgd,) = [
        r
        for r in mlflow.search_runs(experiment_names=["bayeslora"], output_format="list")
        if r.data.tags.get("bayeslora.method") == "sgd"
    ]
    assert sgd.info.status == "FINISHED"
    assert {"train_loss", "val_nll", "accuracy", "ece"} <= set(sgd.data.metrics)
    assert sgd.data.params["hparams.momentum"] == "0.5"
    assert "bayeslora.notes" not in sgd.data.tags  # it trains through training_loop

    bad = bench_subprocess([*args, "--hp", "sgd.momentum=1.5"], tmp_path, pythonpath=site)
    assert bad.returncode == 2 and "momentum=1.5 must be in [0, 1)" in bad.stderr


def test_the_embedded_preset_scales_the_plugins_learning_rate(site, tmp_path):
    code = (
        "from bayeslora.bench.cli import build_parser, resolve_config\n"
        "cfg = resolve_config(build_parser().parse_args(['--methods', 'sgd']))\n"
        "print(cfg.preset, cfg.hparams['sgd'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    preset, hparams = done.stdout.strip().split(" ", 1)
    assert preset == "embedded" and hparams == "{'lr': 0.01}"
