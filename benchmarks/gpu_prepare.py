"""Write what benchmarks/gpu.sh carries besides wheels: the packaged tokenizer (no weights)
as a bayeslora cache, and ARC-Easy's prompts as JSON for ``suite.py --examples``."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

from bayeslora.models.packaged import DEFAULT_MODEL, packaged_model_dir
from bayeslora.tasks import load_task


def main(target: Path) -> None:
    model_dir = packaged_model_dir(DEFAULT_MODEL)
    tokenizer_dir = target / "cache" / "models" / DEFAULT_MODEL
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    for path in model_dir.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors"):
            shutil.copy(path, tokenizer_dir / path.name)
    splits = load_task("arc_easy")
    (target / "examples").mkdir(parents=True, exist_ok=True)
    for name, examples in (("train", splits.train), ("eval", splits.eval)):
        records = [dataclasses.asdict(e) for e in examples]
        (target / "examples" / f"{name}.json").write_text(json.dumps(records))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
