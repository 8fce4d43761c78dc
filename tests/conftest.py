"""Shared fixtures: the packaged SmolLM2 tokenizer and tiny random Llama models."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The test session's bench workers (and the bench processes tests start) share threads
# among themselves, not with whatever else runs on this machine (bayeslora/threads.py).
os.environ.setdefault("BAYESLORA_WORKERS_DIR", tempfile.mkdtemp(prefix="bayeslora-workers-"))


@pytest.fixture(scope="session")
def tokenizer():
    """The packaged SmolLM2 tokenizer (converted once into the bayeslora cache)."""
    from bayeslora.models.loading import ModelSettings, load_tokenizer

    return load_tokenizer(ModelSettings())


@pytest.fixture
def tiny_model(tokenizer):
    """A fresh tiny random LlamaForCausalLM with SmolLM2's vocabulary."""
    from bayeslora.models.tiny import tiny_llama

    return tiny_llama(len(tokenizer))


@pytest.fixture(autouse=True)
def _keep_mlflow_tracking_uri():
    """mlflow.set_tracking_uri (which tests call to query a store) also sets the environment
    variable, which later bench runs, and the processes tests start, would log into."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory):
    """An empty, migrated MLflow SQLite store, copied into a test's output directory
    (creating one runs MLflow's migrations, ~10 s each on this machine)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    store = SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "artifacts"))
    store.engine.dispose()
    return path


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance for the tests that need one (--executor ray), on 2 CPUs with
    a small object store and no dashboard; the bench uses a connection it finds as is."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")

    ray.init(
        num_cpus=2,
        num_gpus=0,  # the tests expect a CPU-only instance, also on a GPU host
        include_dashboard=False,
        object_store_memory=200 * 2**20,
        _node_ip_address="127.0.0.1",
        configure_logging=False,
    )
    yield ray
    ray.shutdown()
