"""The harness's safe defaults: no credentials in the store, no pickles, no remote code, adapters
as safetensors, no server listening beyond this machine.

Covered elsewhere and not repeated here: a bad ``--storage`` error masks its password
(tests/bench/test_validation.py), ``describe_storage`` hides it (tests/tuning/test_study.py),
a checkpoint holds no pickle (tests/training/test_checkpoint.py::test_no_pickle_in_a_checkpoint)
and a bench run logs ``adapter/adapter_model.safetensors``
(tests/bench/test_cli.py::test_mlflow_holds_parent_and_child_runs).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import bayeslora
from bayeslora.bench.cli import build_parser, main, resolve_config
from tests.bench.test_cli import TINY

PACKAGE = Path(bayeslora.__file__).parent
REPO = PACKAGE.parent

SECRETS = {
    "HF_TOKEN": "hf_SECRETTOKEN123",
    "MLFLOW_TRACKING_PASSWORD": "mlflowSECRET456",
}
DB_PASSWORD = "dbSECRET789"
QUERY_PASSWORD = "querySECRET0"  # SQLAlchemy also takes ?password=
STORAGE = f"postgresql://user:{DB_PASSWORD}@127.0.0.1:5432/optuna?sslmode=disable&password={QUERY_PASSWORD}"


def _sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20  # the package, not an empty directory
    return files


# -- credentials -----------------------------------------------------------------------


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_bench_run_stores_no_credentials_and_no_pickles(monkeypatch, capfd, tmp_path):
    """Credentials in the environment and a password in --storage (without --tune it is only
    recorded): none of them in any file of the store or its artifacts, nor in the output
    (captured at the file descriptors, so log handlers are included). And every file the run
    wrote (adapters saved, the default) loads without unpickling."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    code = main(["--methods", "adamw", *TINY, "--storage", STORAGE, "--output-dir", str(out)])
    captured = capfd.readouterr()
    output = captured.out + captured.err
    assert code == 0, output[-3000:]
    files = _files(out)
    assert "mlflow.db" in files and any(name.endswith("config.json") for name in files)
    for secret in [*SECRETS.values(), DB_PASSWORD, QUERY_PASSWORD]:
        assert secret not in output
        leaks = [name for name, data in files.items() if secret.encode() in data]
        assert not leaks, f"{secret} in {leaks}"
    # The storage is logged, masked: were it not logged at all, the checks above would say
    # nothing about the masking.
    assert b"user:***@127.0.0.1:5432/optuna?sslmode=disable&password=***" in files["mlflow.db"]
    assert any(b"user:***@" in data for name, data in files.items() if name.endswith(".json"))

    # No pickles: the adapter is safetensors (tests/bench/test_cli.py checks its artifact
    # path), and no file is a pickle stream or a torch.save zip (which holds a data.pkl).
    from safetensors.torch import load_file

    tensors = [name for name in files if name.endswith(".safetensors")]
    assert any(name.endswith("adapter/adapter_model.safetensors") for name in tensors), tensors
    for name in tensors:
        assert load_file(out / name)  # a safetensors file, with tensors in it
    for name, data in files.items():
        assert not name.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")), name
        if name not in tensors:  # a safetensors header length may start with these bytes
            assert not re.match(rb"\x80[\x02-\x05]", data[:2]), f"{name} is a pickle"
        assert not (data[:4] == b"PK\x03\x04" and b"data.pkl" in data), f"{name} is torch.save'd"


# -- no unpickling in the package --------------------------------------------------------

PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "shelve", "joblib"}


def _unsafe_loads(source: str) -> list[str]:
    """What in ``source`` can unpickle: imports of pickle-based modules, ``torch.load``
    without ``weights_only=True``, ``numpy.load(allow_pickle=True)``."""
    found = []
    torch_names, load_names = {"torch"}, set()  # "import torch as t", "from torch import load"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    found.append(f"line {node.lineno}: import {alias.name}")
                if alias.name == "torch":
                    torch_names.add(alias.asname or "torch")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in PICKLE_MODULES:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            if node.module == "torch":
                load_names |= {a.asname or a.name for a in node.names if a.name == "load"}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        keywords = {k.arg: k.value for k in node.keywords}
        is_torch_load = (
            isinstance(func, ast.Attribute)
            and func.attr == "load"
            and isinstance(func.value, ast.Name)
            and func.value.id in torch_names
        ) or (isinstance(func, ast.Name) and func.id in load_names)
        if is_torch_load:
            weights_only = keywords.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"line {node.lineno}: torch.load without weights_only=True")
        allow = keywords.get("allow_pickle")
        if not (allow is None or (isinstance(allow, ast.Constant) and allow.value is False)):
            found.append(f"line {node.lineno}: allow_pickle")
    return found


def test_the_unpickling_check_finds_what_it_looks_for():
    bad = (
        "import torch as t\nimport pickle\nfrom dill import loads\nfrom torch import load\n"
        "t.load('f')\nload('f', weights_only=False)\nimport numpy as np\n"
        "np.load('f', allow_pickle=True)\n"
    )
    assert len(_unsafe_loads(bad)) == 5
    good = "import torch\ntorch.load('f', weights_only=True)\nfrom safetensors.torch import load_file\n"
    assert _unsafe_loads(good) == []


def test_the_package_never_unpickles():
    found = {
        str(path.relative_to(REPO)): hits
        for path in _sources()
        if (hits := _unsafe_loads(path.read_text(encoding="utf-8")))
    }
    assert not found


# -- remote code -----------------------------------------------------------------------


def test_trust_remote_code_is_off_by_default():
    from bayeslora.bench.config import BenchConfig
    from bayeslora.models.loading import ModelSettings

    assert ModelSettings().trust_remote_code is False
    assert BenchConfig().trust_remote_code is False
    cfg = resolve_config(build_parser().parse_args([]))
    assert cfg.trust_remote_code is False and cfg.model_settings().trust_remote_code is False
    hub = resolve_config(build_parser().parse_args(["--model", "org/model", "--source", "hub"]))
    assert hub.model_settings().trust_remote_code is False
    assert cfg.to_dict()["trust_remote_code"] is False  # logged with every run
    # The flag is what turns it on (so the checks above can tell the two apart).
    opted_in = resolve_config(build_parser().parse_args(["--trust-remote-code"]))
    assert opted_in.model_settings().trust_remote_code is True


class _Stop(Exception):
    pass


def test_the_default_reaches_transformers_as_false(monkeypatch):
    """load_tokenizer and load_causal_lm pass trust_remote_code=False to from_pretrained."""
    import transformers

    from bayeslora.models.loading import ModelSettings, load_causal_lm, load_tokenizer

    calls = []

    def from_pretrained(source, *args, **kwargs):
        calls.append(kwargs)
        raise _Stop

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    settings = ModelSettings(name="org/model", device="cpu")
    for load in (load_tokenizer, load_causal_lm):
        with pytest.raises(_Stop):
            load(settings)
    assert len(calls) == 2
    assert all(kwargs["trust_remote_code"] is False for kwargs in calls)


# -- servers ---------------------------------------------------------------------------


def test_the_package_starts_no_server_and_binds_nothing_to_all_interfaces():
    """bayeslora starts no server (MLflow UIs and servers are the user's to start). So: no
    "0.0.0.0" anywhere in the package, and no code that listens."""
    listening = re.compile(
        r"\.bind\(|\.listen\(|serve_forever|\b(http\.server|socketserver|uvicorn|flask|"
        r"werkzeug|optuna_dashboard|run_simple)\b"
    )
    texts = [p for p in PACKAGE.rglob("*") if p.suffix in {".py", ".md", ".toml", ".json", ".yaml"}]
    assert len(texts) > 20
    for path in texts:
        text = path.read_text(encoding="utf-8")
        assert "0.0.0.0" not in text, path
        if path.suffix == ".py":
            assert not listening.search(text), (path, listening.search(text).group())


def test_the_servers_the_docs_tell_users_to_start_listen_on_localhost():
    """Every ``mlflow ui``/``mlflow server`` command in the README, the docs and the package's
    messages names ``--host 127.0.0.1``; the harness's own hint does too."""
    from bayeslora.tracking.urls import check_reachable

    texts = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *_sources()]
    commands = [
        (path.name, line)
        for path in texts
        if path.is_file()
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.search(r"mlflow (ui|server) --", line)
    ]
    assert commands  # the README's UI command at least
    for where, line in commands:
        assert "--host 127.0.0.1" in line, (where, line)
    with pytest.raises(ValueError, match=r"mlflow server --host 127\.0\.0\.1 ") as err:
        check_reachable("http://127.0.0.1:1", "--tracking-uri", timeout=1)
    assert "0.0.0.0" not in str(err.value)
