"""The embedded default for real: packaged SmolLM2-135M on packaged ARC-Easy."""

import json

import pytest
import torch

from bayeslora.models.classifier import LoraSettings, lora_classifier, position_ids_from_mask
from bayeslora.models.loading import ModelSettings, load_causal_lm
from bayeslora.tasks import answer_token_ids, load_task
from bayeslora.tasks.encoding import TokenizedDataset, make_loader

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm2():
    return load_causal_lm(ModelSettings())


def test_packaged_model_is_smollm2(smollm2):
    assert type(smollm2).__name__ == "LlamaForCausalLM"
    assert smollm2.config.num_hidden_layers == 30 and smollm2.config.hidden_size == 576
    assert sum(p.numel() for p in smollm2.parameters()) == 134_515_008


def test_it_knows_the_sky_is_blue(smollm2, tokenizer):
    ids = answer_token_ids(tokenizer, ("purple", "green", "blue"))
    prompt = "Question: What color is the sky on a clear day?\nAnswer:"
    batch = tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
    with lora_classifier(smollm2, ids, LoraSettings()) as clf:
        clf.eval()
        with torch.no_grad():
            logits = clf(batch["input_ids"], batch["attention_mask"])
    assert logits.argmax(-1).item() == 2


def test_answer_logits_equal_the_full_lm_on_real_arc_prompts(smollm2, tokenizer):
    splits = load_task("arc_easy")
    ids = answer_token_ids(tokenizer, splits.task.answer_labels)
    data = TokenizedDataset(splits.eval[:4], tokenizer)
    batch = next(iter(make_loader(data, 4, shuffle=False, seed=0, pad_token_id=data.pad_token_id)))
    with lora_classifier(smollm2, ids, LoraSettings()) as clf:
        clf.eval()
        with torch.no_grad():
            ours = clf(batch["input_ids"], batch["attention_mask"])
            full = smollm2(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                position_ids=position_ids_from_mask(batch["attention_mask"]),
            ).logits[:, -1, ids]
    torch.testing.assert_close(ours, full, atol=1e-4, rtol=1e-4)


def test_bench_quick_run_on_the_real_default(tmp_path):
    from bayeslora.bench.cli import main

    code = main(
        [
            "--methods",
            "adamw,ivon",
            "--quick",
            "--steps",
            "4",
            "--limit-eval",
            "32",
            "--hp",
            "ivon.test_samples=2",
            "--no-progress",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert (next(tmp_path.glob("bench-*")) / "results.txt").read_text().count("arc_easy") == 3


def test_choices_scoring_shows_what_the_model_knows_zero_shot(tmp_path):
    # Measured on all 567 validation questions: 0.524 (README, "Scoring"); chance is 0.25.
    from bayeslora.bench.cli import main

    args = ["--methods", "pretrained", "--scoring", "choices", "--limit-eval", "120"]
    assert main([*args, "--no-progress", "--output-dir", str(tmp_path)]) == 0
    (results,) = tmp_path.glob("bench-*/results.jsonl")
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert row["mode"] == "pretrained" and row["metrics"]["accuracy"] > 0.4
