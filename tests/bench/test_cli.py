"""The bench end to end on the tiny random model, then MLflow queries of what it wrote."""

import json

import pytest

from bayeslora.bench.cli import build_parser, main, resolve_config

TINY = [
    "--model",
    "tiny-random-llama",
    "--quick",
    "--steps",
    "3",
    "--limit-train",
    "32",
    "--limit-eval",
    "16",
    "--no-progress",
]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = main(
        [
            "--methods",
            "adamw,ivon",
            *TINY,
            "--seeds",
            "0,1",
            "--hp",
            "ivon.test_samples=2",
            "--output-dir",
            str(out),
        ]
    )
    return code, out


def test_exit_code_and_results_file(bench_run):
    code, out = bench_run
    assert code == 0
    (results,) = out.glob("bench-*/results.jsonl")
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted((r["mode"], r["seed"]) for r in rows) == [
        ("adamw", 0),
        ("adamw", 1),
        ("ivon", 0),
        ("ivon", 1),
        ("ivon@mean", 0),
        ("ivon@mean", 1),
    ]
    assert all(0 <= r["metrics"]["accuracy"] <= 1 and r["metrics"]["nll"] > 0 for r in rows)
    assert {r["method"] for r in rows} == {"adamw", "ivon"}
    assert len({r["cell"] for r in rows}) == 4  # one key per (method, seed)
    (comparison,) = out.glob("bench-*/comparison.txt")
    lines = comparison.read_text().splitlines()
    assert lines[0].startswith("difference to adamw on arc_easy")
    assert sorted(line.split()[0] + line.split()[2] for line in lines[1:]) == [
        "ivon0",
        "ivon1",
        "ivon@mean0",
        "ivon@mean1",
    ]
    # two seeds: the over-seed summary is written too
    (seeds,) = out.glob("bench-*/seeds.txt")
    lines = seeds.read_text().splitlines()
    assert lines[0] == "over seeds on arc_easy (mean ± std):"
    assert sorted(line.split()[0] for line in lines[1:4]) == ["adamw", "ivon", "ivon@mean"]
    assert all(" 2 seeds " in line for line in lines[1:4] + lines[5:])


def test_mlflow_holds_parent_and_child_runs(bench_run):
    import mlflow

    _, out = bench_run
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["bayeslora"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("bayeslora.kind") == "bench"]
    children = [r for r in runs if r.data.tags.get("bayeslora.kind") == "result"]
    assert len(parents) == 1 and len(children) == 6
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    comparisons = mlflow.artifacts.load_dict(
        f"{parents[0].info.artifact_uri}/comparison_arc_easy.json"
    )
    assert {(c["mode"], c["seed"]) for c in comparisons} == {
        ("ivon", 0),
        ("ivon", 1),
        ("ivon@mean", 0),
        ("ivon@mean", 1),
    }
    assert all(
        c["accuracy"]["low"] <= c["accuracy"]["diff"] <= c["accuracy"]["high"] for c in comparisons
    )
    seeds = mlflow.artifacts.load_dict(f"{parents[0].info.artifact_uri}/seeds_arc_easy.json")
    assert {(d["mode"], tuple(d["seeds"])) for d in seeds["differences"]} == {
        ("ivon", (0, 1)),
        ("ivon@mean", (0, 1)),
    }

    ivon = next(c for c in children if c.data.tags["bayeslora.mode"] == "ivon")
    params = ivon.data.params
    for key in (
        "config.model",
        "task.source",
        "task.protocol",
        "task.template",
        "task.max_length",
        "lora.r",
        "hparams.ess",
        "hparams.hess_init",
        "train.steps",
        "train.batch_size",
        "versions.torch",
        "versions.transformers",
        "harness.sources",
        "threads.at_start",
        "cell.model.source",
        "cell.data.eval_examples",
        "seed",
        "mode",
    ):
        assert key in params, key
    # what was used, read from the loaded model, agrees with what was asked for
    assert (params["model_used.device"], params["model_used.dtype"]) == ("cpu", "float32")
    assert params["model_used.quantization"] == "none"
    assert params["hparams.ess"] == "1000000.0" and params["lora.r"] == "8"
    for key in (
        "accuracy",
        "ece",
        "nll",
        "brier",
        "mce",
        "train_time_s",
        "eval_time_s",
        "train_loss",
    ):
        assert key in ivon.data.metrics, key

    client = mlflow.MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(ivon.info.run_id)}
    assert {"config.json", "predictions.json", "adapter"} <= artifacts
    adapter = {a.path for a in client.list_artifacts(ivon.info.run_id, "adapter")}
    assert "adapter/adapter_model.safetensors" in adapter
    predictions = mlflow.artifacts.load_dict(f"{ivon.info.artifact_uri}/predictions.json")
    assert len(predictions["probs"]) == len(predictions["labels"]) == 16


def test_unknown_method_is_a_clear_error(capsys, tmp_path):
    assert main(["--methods", "ivn", *TINY, "--output-dir", str(tmp_path)]) == 2
    assert "Did you mean 'ivon'" in capsys.readouterr().err


def test_bad_hyperparameter_is_a_clear_error(capsys, tmp_path):
    assert (
        main(
            [
                "--methods",
                "adamw",
                "--hp",
                "adamw.learning_rate=1",
                *TINY,
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "unknown hyperparameter" in capsys.readouterr().err


def test_config_file_then_flags(tmp_path):
    config = tmp_path / "bench.yaml"
    config.write_text("methods: [ivon]\nsteps: 7\nhparams:\n  ivon: {ess: 1e7, lr: 0.01}\n")
    args = build_parser().parse_args(
        ["--config", str(config), "--steps", "9", "--hp", "ivon.lr=0.02"]
    )
    cfg = resolve_config(args)
    assert cfg.methods == ["ivon"] and cfg.steps == 9
    from bayeslora.methods.ivon import IVON

    ivon = IVON.make_config("arc_easy", cfg.hparams["ivon"])  # YAML reads "1e7" as a string
    assert (ivon.ess, ivon.lr) == (1e7, 0.02)
    config.write_text("stepz: 3\n")
    with pytest.raises(ValueError, match="unknown setting"):
        resolve_config(build_parser().parse_args(["--config", str(config)]))


def _resolve(*argv: str):
    return resolve_config(build_parser().parse_args(list(argv)))


def test_quick_preset_only_touches_selected_methods():
    cfg = _resolve("--quick", "--methods", "adamw", "--preset", "none")
    assert cfg.steps == 8 and cfg.hparams == {} and cfg.preset == "quick"
    cfg = _resolve("--quick", "--preset", "none")
    assert cfg.hparams == {"ivon": {"test_samples": 2}}
    cfg = _resolve("--quick", "--methods", "ivon+temperature", "--preset", "none")
    assert cfg.hparams == {"ivon+temperature": {"test_samples": 2}}


def test_embedded_preset_applies_to_the_packaged_default_model_only():
    cfg = _resolve()
    assert cfg.preset == "embedded" and cfg.scoring == "choices"
    assert (cfg.steps, cfg.limit_train, cfg.limit_eval) == (100, None, None)
    assert cfg.methods == ["adamw", "ivon", "pretrained"]
    assert cfg.hparams == {
        "adamw": {"lr": pytest.approx(5e-4)},
        "ivon": {"lr": pytest.approx(0.3), "test_samples": 4},
    }
    # another model gets the papers' settings (letters scoring) unless it asks for the preset
    cfg = _resolve("--model", "tiny-random-llama")
    assert (cfg.preset, cfg.steps, cfg.limit_train, cfg.hparams) == ("none", 300, None, {})
    assert cfg.scoring == "letters"
    cfg = _resolve("--model", "tiny-random-llama", "--preset", "embedded", "--quick")
    assert cfg.preset == "embedded+quick" and cfg.steps == 8
    assert cfg.hparams["ivon"] == {"lr": pytest.approx(0.3), "test_samples": 2}
    # the letters protocol stays one flag away
    assert _resolve("--scoring", "letters").scoring == "letters"


def test_embedded_preset_scales_every_builtin_lr_alike():
    from bayeslora.bench.config import EMBEDDED_LR_SCALE
    from bayeslora.methods.registry import get_method

    names = ["adamw", "ivon", "mcdropout", "laplace", "swa", "swag", "ensemble", "temperature"]
    cfg = _resolve("--methods", ",".join(n + "+temperature" if n == "adamw" else n for n in names))
    for name in names:
        key = name + "+temperature" if name == "adamw" else name
        paper = get_method(name).make_config("arc_easy")
        assert cfg.hparams[key]["lr"] == pytest.approx(paper.lr * EMBEDDED_LR_SCALE), name
        if hasattr(paper, "swa_lr"):
            assert cfg.hparams[key]["swa_lr"] == pytest.approx(paper.swa_lr * EMBEDDED_LR_SCALE)
    assert "pretrained" not in _resolve("--methods", "pretrained").hparams  # nothing to scale


def test_flags_and_config_file_override_the_preset(tmp_path):
    cfg = _resolve("--steps", "50", "--hp", "adamw.lr=1e-4", "--limit-train", "1000")
    assert (cfg.steps, cfg.limit_train, cfg.hparams["adamw"]) == (50, 1000, {"lr": "1e-4"})
    assert cfg.hparams["ivon"] == {"lr": pytest.approx(0.3), "test_samples": 4}
    config = tmp_path / "bench.yaml"
    config.write_text("preset: none\nsteps: 7\n")
    cfg = _resolve("--config", str(config))
    assert (cfg.preset, cfg.steps, cfg.hparams) == ("none", 7, {})
    cfg = _resolve("--config", str(config), "--preset", "embedded")
    assert (cfg.preset, cfg.steps, cfg.scoring) == ("embedded", 7, "choices")
    config.write_text("preset: fast\n")
    with pytest.raises(ValueError, match="preset must be one of"):
        _resolve("--config", str(config))


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--methods",
        "--tasks",
        "--model",
        "--seeds",
        "--steps",
        "--batch-size",
        "--eval-every",
        "--lora-rank",
        "--hp",
        "--tracking-uri",
        "--output-dir",
        "--quick",
        "--preset",
        "--config",
    ):
        assert flag in text


def test_threads_must_be_positive_before_anything_loads(capsys, tmp_path):
    assert main(["--methods", "adamw", *TINY, "--threads", "0", "--output-dir", str(tmp_path)]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
    assert not list(tmp_path.glob("bench-*"))


def test_threads_are_logged_with_every_run(bench_run):
    import mlflow

    _, out = bench_run
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["bayeslora"], output_format="list")
    assert len(runs) >= 7  # the bench run and its six results
    for run in runs:
        assert int(run.data.params["threads.cores"]) >= 1
        assert int(run.data.params["threads.at_start"]) >= 1
    results = [r for r in runs if "bayeslora.mode" in r.data.tags]
    assert results and all(
        r.data.tags["bayeslora.threads"].split(",")[0].isdigit() for r in results
    )


def test_choices_scoring_runs_the_zero_shot_baseline_and_keys_its_cells(tmp_path, capsys):
    import mlflow

    args = ["--methods", "pretrained,adamw", *TINY, "--output-dir", str(tmp_path)]
    assert main([*args, "--scoring", "choices", "--length-norm", "token"]) == 0
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["bayeslora"], output_format="list")
    results = [r for r in runs if r.data.tags.get("bayeslora.kind") == "result"]
    assert {r.data.tags["bayeslora.mode"] for r in results} == {"pretrained", "adamw"}
    for run in results:
        params = run.data.params
        assert params["task.scoring"] == "choices"
        assert params["task.template"] == "cloze_question"
        assert params["task.length_norm"] == "token"
    pretrained = next(r for r in results if r.data.tags["bayeslora.mode"] == "pretrained")
    assert "train_loss" not in pretrained.data.metrics  # nothing trained
    capsys.readouterr()
    # the letters protocol is another cell: nothing is reused from the choices runs
    assert main([*args, "--scoring", "letters"]) == 0
    assert "0 finished earlier" in capsys.readouterr().err
    # the same choices command again reuses both cells
    assert main([*args, "--scoring", "choices", "--length-norm", "token"]) == 0
    assert "2 finished earlier" in capsys.readouterr().err


def test_unknown_scoring_settings_fail_before_anything_loads(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["--scoring", "letter", "--output-dir", str(tmp_path)])
    assert "invalid choice: 'letter'" in capsys.readouterr().err
    from bayeslora.bench.config import BenchConfig

    with pytest.raises(ValueError, match="length normalisation must be one of"):
        BenchConfig(length_norm="chars")
    with pytest.raises(ValueError, match="scoring must be one of"):
        BenchConfig(scoring="cloze")


def test_explain_prints_what_produced_a_stored_result(bench_run, capsys, monkeypatch):
    import mlflow

    _, out = bench_run
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["bayeslora"], output_format="list")
    ivon = next(r for r in runs if r.data.tags.get("bayeslora.mode") == "ivon")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # set_tracking_uri above sets it
    capsys.readouterr()
    assert main(["--explain", ivon.info.run_id, "--output-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"run {ivon.info.run_id} ({ivon.info.run_name}): FINISHED")
    for heading in ("metrics", "harness", "libraries", "model as loaded", "model weights", "data"):
        assert f"\n{heading}\n" in text, heading
    for name in ("nll", "harness.sources", "versions.torch", "model_used.dtype", "threads.cores"):
        assert f"  {name} " in text, name
    assert ivon.data.params["cell.data.eval_examples"] in text
    assert f"  cell.key                         {ivon.data.tags['bayeslora.cell']}" in text

    assert main(["--explain", "no-such-run", "--output-dir", str(out)]) == 2
    assert "run 'no-such-run' is not in the MLflow store" in capsys.readouterr().err
    assert main(["--explain", "x", "--output-dir", str(out / "nowhere")]) == 2
    assert "no MLflow store at" in capsys.readouterr().err
