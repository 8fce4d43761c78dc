import pytest
import torch

from bayeslora.models.classifier import LoraSettings, lora_classifier, position_ids_from_mask

ANSWER_IDS = [330, 389, 340, 422]


def _batch(tokenizer, texts):
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, encoded))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    return ids, mask


def test_logits_equal_the_lm_head_at_the_last_position(tokenizer, tiny_model):
    ids, mask = _batch(tokenizer, ["Question: a b c?\nAnswer:", "Short\nAnswer:"])
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings()) as clf:
        clf.eval()
        logits = clf(ids, mask)
        reference = clf.peft_model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)
        ).logits[:, -1, ANSWER_IDS]
    assert logits.shape == (2, 4)
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-5)


def test_left_padding_does_not_change_an_example(tokenizer, tiny_model):
    long_text = "Question: " + "word " * 30 + "\nAnswer:"
    ids, mask = _batch(tokenizer, ["Short question\nAnswer:", long_text])
    alone_ids, alone_mask = _batch(tokenizer, ["Short question\nAnswer:"])
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings(dropout=0.0)) as clf:
        clf.eval()
        torch.testing.assert_close(
            clf(ids, mask)[0], clf(alone_ids, alone_mask)[0], atol=1e-5, rtol=1e-4
        )


def test_only_lora_weights_train_and_unload_restores_the_base(tokenizer, tiny_model):
    before = {n: p.clone() for n, p in tiny_model.state_dict().items()}
    ids, mask = _batch(tokenizer, ["x y z\nAnswer:"] * 2)
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings(r=4, alpha=8)) as clf:
        names = [n for n, _ in clf.lora_named_parameters()]
        assert names and all("lora_" in n for n in names)
        # 2 layers x (q_proj, v_proj) x (A, B)
        assert len(names) == 8
        assert all(p.shape[0] == 4 or p.shape[1] == 4 for p in clf.lora_parameters())
        loss = torch.nn.functional.cross_entropy(clf(ids, mask), torch.tensor([0, 1]))
        loss.backward()
        assert all(p.grad is not None for p in clf.lora_parameters())
        assert not any(
            p.grad is not None for n, p in clf.peft_model.named_parameters() if "lora_" not in n
        )
        with torch.no_grad():
            for p in clf.lora_parameters():
                p.add_(1.0)
    after = tiny_model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in tiny_model.parameters())


def test_lora_state_round_trip_and_seeded_init(tokenizer, tiny_model):
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings(), seed=1) as clf:
        state = clf.lora_state()
        with torch.no_grad():
            for p in clf.lora_parameters():
                p.zero_()
        clf.load_lora_state(state)
        assert all(torch.equal(state[n], p) for n, p in clf.lora_named_parameters())
        with pytest.raises(KeyError, match="missing"):
            clf.load_lora_state({})
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings(), seed=1) as clf:
        assert all(torch.equal(state[n], p) for n, p in clf.lora_named_parameters())
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings(), seed=2) as clf:
        assert not all(torch.equal(state[n], p) for n, p in clf.lora_named_parameters())


def test_lora_dropout_modules_are_found(tiny_model):
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings(dropout=0.1)) as clf:
        modules = clf.lora_dropout_modules()
        assert len(modules) == 4 and all(m.p == 0.1 for m in modules)


def test_adapter_saves_as_safetensors(tmp_path, tiny_model):
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings()) as clf:
        clf.save_adapter(str(tmp_path))
    assert (tmp_path / "adapter_model.safetensors").is_file()
    assert (tmp_path / "adapter_config.json").is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"r": 0}, "rank"), ({"dropout": 1.0}, "dropout")],
)
def test_bad_lora_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoraSettings(**kwargs)


def test_bad_answer_ids(tiny_model):
    with pytest.raises(ValueError, match="distinct"):
        with lora_classifier(tiny_model, [5, 5], LoraSettings()):
            pass
    with pytest.raises(ValueError, match="outside the vocabulary"):
        with lora_classifier(tiny_model, [5, 10**7], LoraSettings()):
            pass


def test_base_modules_are_registered_once(tiny_model):
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings()) as clf:
        assert len(list(clf.named_parameters())) == len(list(clf.peft_model.named_parameters()))
        assert clf.output_layer is tiny_model.get_output_embeddings()


def test_a_script_that_never_leaves_the_context_still_exits():
    """Closing the context at interpreter exit skips peft's unload(), whose tqdm monitor
    thread cannot start during shutdown (the process used to hang there, idle)."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        from bayeslora.models.classifier import LoraSettings, lora_classifier
        from bayeslora.models.tiny import tiny_llama

        context = lora_classifier(tiny_llama(64), [1, 2, 3, 4], LoraSettings())
        clf = context.__enter__()  # and never __exit__
        print("entered", flush=True)
        """
    )
    keep = ("PATH", "HOME", "BAYESLORA_CACHE", "PYTHONPATH")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=90
    )
    assert done.returncode == 0, done.stderr
    assert "entered" in done.stdout
    assert "Exception ignored" not in done.stderr and "tqdm" not in done.stderr, done.stderr


def test_a_context_dropped_before_shutdown_still_restores_the_base(tiny_model):
    import gc

    context = lora_classifier(tiny_model, ANSWER_IDS, LoraSettings())
    clf = context.__enter__()
    assert clf.lora_parameters()
    del context, clf
    gc.collect()  # closes the abandoned generator: its finally unloads the adapters
    assert not hasattr(tiny_model, "peft_config")
    assert not any("lora_" in name for name, _ in tiny_model.named_parameters())
    assert not any(p.requires_grad for p in tiny_model.parameters())
