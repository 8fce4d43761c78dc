"""Bad input is a clear error (exit 2, no traceback) before any model, data or store is
touched (issue: reliability). In-process through ``main`` so each case takes a second."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayeslora.bench.cli import build_parser, main, resolve_config
from bayeslora.methods.registry import RegistryError
from bayeslora.tasks.jsonl import JsonlFormatError, read_jsonl
from bayeslora.tasks.names import UnknownNameError

BAD = [
    (["--steps", "0"], "steps must be >= 1"),
    (["--steps", "-1"], "steps must be >= 1"),
    (["--batch-size", "0"], "batch_size must be >= 1"),
    (["--hp", "ivon.ess=-1"], "ess=-1 must be > 0"),
    (["--hp", "ivon.ess=0"], "ess=0 must be > 0"),
    (["--hp", "ivon.lr=-0.1"], "lr=-0.1 must be >= 0"),
    (["--hp", "adamw.lr=nan"], "must be a finite number"),
    (["--hp", "ivon.test_samples=0"], "test_samples=0 must be >= 1"),
    (["--hp", "ivon.beta1=1"], "beta1=1 must be in [0, 1)"),
    (["--lora-dropout", "0", "--methods", "mcdropout"], "--lora-dropout"),
    (["--model", "/does/not/exist"], "no such model directory"),
    (["--model", "~nosuchuser0"], "no such model directory"),  # found by the fuzz test below
    (["--model", "???"], "hub id"),
    (["--eval-every", "-1"], "eval_every must be >= 0"),
    (["--val-fraction", "1.5", "--eval-every", "5"], "--val-fraction must be between 0 and 1"),
    (["--tracking-uri", "http://127.0.0.1:1"], "is not reachable"),
    (["--device", "3"], "is not a device"),
    (["--device", "-3"], "is not a device"),
    (["--device", "0.5"], "is not a device"),
    (["--device", "inf"], "is not a device"),
    (["--limit-train", "0"], "--limit-train must be >= 1"),
    (["--limit-eval", "-1"], "--limit-eval must be >= 1"),
    (["--warmup-steps", "-1"], "warmup_steps must be in"),
    (["--methods", "adamw,adamw"], "lists adamw more than once"),
    (["--eval-tasks", "boolq", "--scoring", "choices"], "the answer count must match"),
    (["--eval-tasks", "boolq"], "the answer letters must match"),
    (["--eval-tasks", "arc_chalenge"], "Did you mean 'arc_challenge'"),
    (["--eval-tasks", "obqa,obqa"], "--eval-tasks lists obqa more than once"),
    (["--tau-grid", "0,1", "--methods", "adamw"], "none of --methods adamw does"),
    (["--tau-grid=-0.5,1"], "--tau-grid values are scales"),
    (["--tau-grid", "nan"], "--tau-grid values are scales"),
    (["--tasks", "arc_eassy"], "Did you mean 'arc_easy'"),
    (["--methods", "adamm"], "Did you mean 'adamw'"),
    (["--lora-rank", "0"], "LoRA rank must be >= 1"),
    (["--lora-alpha", "0"], "LoRA alpha"),
    (["--lora-targets", "q_proj,q_proj"], "without repeats"),
    (["--max-length", "0"], "max_length must be >= 2"),
    (["--truncation-side", "right"], "truncation_side must be 'left'"),
    (["--lora-targets", "q_proj,foo_proj"], "foo_proj match(es) no module of tiny-random-llama"),
    (["--tune", "--storage", "postgresql://u:SECRET@127.0.0.1:1/db"], "postgresql://u:***@"),
    (
        ["--storage", "postgresql://u:SECRET@h:abc/db"],
        "--storage postgresql://u:***@h:abc/db: Port",
    ),
    (["--source", "jsonl"], "needs --jsonl-train"),
    (["--source", "jsonl", "--jsonl-train", "/no/such.jsonl"], "does not exist"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exits_2_before_anything_is_touched(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["--model", "tiny-random-llama", "--output-dir", str(out), *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err
    assert "Traceback" not in err and "SECRET" not in err
    assert not out.exists()  # no store, no run directory: nothing was opened


def _jsonl(tmp_path, text: bytes):
    path = tmp_path / "data.jsonl"
    path.write_bytes(text)
    return path


def test_jsonl_duplicate_ids_name_both_lines(tmp_path):
    record = {"question": "q", "choices": ["a", "b"], "answer": 0, "id": "x"}
    path = _jsonl(tmp_path, (json.dumps(record) + "\n\n" + json.dumps(record) + "\n").encode())
    with pytest.raises(JsonlFormatError, match="line 3: id 'x' was already used on line 1"):
        read_jsonl(path)


def test_jsonl_non_utf8_names_file_and_line(tmp_path):
    good = json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0}).encode()
    path = _jsonl(tmp_path, good + b"\n" + b'{"question": "\xff"}\n')
    with pytest.raises(JsonlFormatError, match=r"data.jsonl, line 2: not UTF-8"):
        read_jsonl(path)


def test_jsonl_deep_nesting_and_empty_file(tmp_path):
    with pytest.raises(JsonlFormatError, match="nested too deeply"):
        read_jsonl(_jsonl(tmp_path, b"[" * 100_000 + b"\n"))
    with pytest.raises(JsonlFormatError, match="no records") as caught:
        read_jsonl(_jsonl(tmp_path, b"\n  \n"))
    assert "line 0" not in str(caught.value)


# What a bad input may raise: the errors main() turns into "error: ..." and exit 2.
NAMED = (ValueError, KeyError, FileNotFoundError, RegistryError, UnknownNameError)
FLAGS = [
    "--steps", "--batch-size", "--grad-accum", "--warmup-steps", "--eval-every",
    "--lora-rank", "--lora-alpha", "--lora-dropout", "--max-length", "--limit-train",
    "--limit-eval", "--val-fraction", "--tune-fraction", "--n-trials", "--threads",
    "--device", "--model", "--methods", "--tasks", "--seeds", "--hp", "--dtype",
    "--scoring", "--length-norm", "--lora-targets", "--source", "--quantization",
]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(["0", "-1", "1", "nan", "inf", "-inf", "1e309", "", ",", "1.5", "abc"]),
    st.sampled_from(["ivon.ess=-1", "adamw.lr=x", "ivon.=1", "a.b=c", "mcdropout.test_samples=0"]),
    st.text(string.printable, max_size=12),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(FLAGS), VALUES), min_size=1, max_size=4))
def test_fuzzed_argument_lists_raise_only_named_errors(pairs):
    argv = ["--model", "tiny-random-llama"] + [x for pair in pairs for x in pair]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse's own usage error
        assert exit_.code == 2
        return
    try:
        cfg = resolve_config(args)
        from bayeslora.bench.runner import check_methods

        check_methods(cfg)
    except NAMED:
        pass


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(["question", "choices", "answer", "id", "context", "x"]), children
            )
        ),
        max_leaves=8,
    )
)
def test_fuzzed_jsonl_records_raise_only_format_errors(tmp_path_factory, record):
    path = tmp_path_factory.mktemp("fuzz") / "f.jsonl"
    path.write_text(json.dumps(record) + "\n")
    try:
        read_jsonl(path)
    except JsonlFormatError:
        pass


CONFIG_KEYS = [
    "steps", "batch_size", "seeds", "methods", "tasks", "lora_rank", "lora_dropout",
    "val_fraction", "eval_every", "max_length", "hparams", "model", "dtype", "limit_eval",
    "scoring", "threads", "n_trials", "source", "not_a_setting",
]  # fmt: skip
CONFIG_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["ivon", "adamw", "ess", "lr", "x"]), children, max_size=2
        )
    ),
    max_leaves=5,
)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.dictionaries(st.sampled_from(CONFIG_KEYS), CONFIG_VALUES, max_size=4),
    st.sampled_from([".json", ".yaml"]),
)
def test_fuzzed_config_files_raise_only_named_errors(tmp_path_factory, values, suffix):
    path = tmp_path_factory.mktemp("cfg") / f"bench{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(values))
    else:
        import yaml

        path.write_text(yaml.safe_dump(values))
    args = build_parser().parse_args(["--model", "tiny-random-llama", "--config", str(path)])
    try:
        cfg = resolve_config(args)
        from bayeslora.bench.runner import check_methods

        check_methods(cfg)
    except NAMED:
        pass


BAD_CONFIG_FILES = [
    ("bench.yaml", b"steps: [1, 2\n", "is not valid YAML"),
    ("bench.json", b'{"steps": 3,}', "is not valid JSON"),
    ("bench.yaml", b"\xff\xfe\x00", "is not UTF-8 text"),
    ("bench.yaml", b"steps: abc\n", "setting steps must be a whole number, got 'abc'"),
    ("bench.yaml", b"steps: true\n", "setting steps must be a whole number, got True"),
    ("bench.yaml", b"methods: [adamw, null]\n", "setting methods[1] must be a string, got None"),
    ("bench.yaml", b"hparams: 1\n", "hparams must be a mapping with string keys, got 1"),
    ("bench.yaml", b"hparams: {ivon: 3}\n", "hparams.ivon must be a mapping"),
    ("bench.yaml", b"- steps\n", "must hold a mapping of settings"),
    ("bench.yaml", b"stepz: 3\n", "unknown setting(s) ['stepz']"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_CONFIG_FILES)
def test_bad_config_files_exit_2_naming_the_problem(name, content, message, tmp_path, capsys):
    path = tmp_path / name
    path.write_bytes(content)
    out = tmp_path / "out"
    rc = main(["--model", "tiny-random-llama", "--config", str(path), "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err
    assert "Traceback" not in err and not out.exists()
