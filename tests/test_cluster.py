"""bayeslora/cluster.py without starting Ray: the missing extra, settings, shared stores."""

import sys

import pytest

from bayeslora.bench.cli import main
from bayeslora.bench.config import BenchConfig
from bayeslora.cluster import check_shared_stores
from tests.bench.test_cli import TINY


def test_executor_ray_without_the_extra_fails_at_once_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code = main([*TINY, "--executor", "ray", "--output-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "--executor ray needs the optional dependency 'ray'" in err
    assert "pip install 'bayeslora[ray]'" in err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cpus-per-cell", "0"], "--cpus-per-cell must be >= 1"),
        (["--gpus-per-cell", "-1"], "--gpus-per-cell must be >= 0"),
        (["--max-retries", "-1"], "--max-retries must be >= 0"),
        (["--executor", "ray", "--threads", "2"], "give that instead"),
    ],
)
def test_bad_executor_settings_are_exit_2(flags, message, tmp_path, capsys):
    assert main([*TINY, *flags, "--output-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def _cfg(tmp_path, **values) -> BenchConfig:
    return BenchConfig(executor="ray", output_dir=str(tmp_path), **values)


def test_several_nodes_need_stores_every_node_reaches(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(
        ValueError, match=r"--tracking-uri sqlite:.*this machine only.*mlflow server"
    ):
        check_shared_stores(_cfg(tmp_path), nodes=2)  # the default: SQLite in --output-dir
    with pytest.raises(ValueError, match="this machine only"):
        check_shared_stores(_cfg(tmp_path, tracking_uri=str(tmp_path / "mlruns")), nodes=2)
    server = "http://127.0.0.1:5000"  # a server reached through a tunnel on each node
    check_shared_stores(_cfg(tmp_path, tracking_uri=server), nodes=2)
    with pytest.raises(ValueError, match=r"--storage sqlite:.*postgresql://"):
        check_shared_stores(_cfg(tmp_path, tracking_uri=server, tune=True), nodes=2)
    shared = dict(tracking_uri=server, tune=True)
    check_shared_stores(_cfg(tmp_path, storage="postgresql://u@db.example/optuna", **shared), 2)
    check_shared_stores(_cfg(tmp_path, storage="/shared/tune.journal", **shared), 2)


def test_the_dashboard_without_its_packages_is_a_named_error(tmp_path, monkeypatch, capsys):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process

    def init(**kwargs):  # what Ray core (no ray[default]) raises for include_dashboard=True
        assert kwargs["include_dashboard"] is True
        raise Exception("Cannot include dashboard with missing packages.")

    monkeypatch.setattr(ray, "init", init)
    code = main([*TINY, "--executor", "ray", "--ray-dashboard", "--output-dir", str(tmp_path)])
    assert code == 2
    assert "--ray-dashboard needs Ray's dashboard: pip install 'ray[default]'" in (
        capsys.readouterr().err
    )
