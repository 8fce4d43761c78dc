import pytest
import torch

from bayeslora.methods.registry import get_method
from tests.methods.conftest import ANSWER_IDS


def test_predictions_are_the_base_models_own(tiny_model, toy_eval, toy_classifier, quick_settings):
    from bayeslora.models.classifier import position_ids_from_mask
    from bayeslora.tasks.encoding import collate

    batch = collate([toy_eval[i] for i in range(len(toy_eval))], toy_eval.pad_token_id)
    with torch.no_grad():  # the base model alone, before any adapter exists
        tiny_model.eval()
        logits = tiny_model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=position_ids_from_mask(batch["attention_mask"]),
        ).logits[:, -1, ANSWER_IDS]
    method = get_method("pretrained")(train=quick_settings())
    with toy_classifier(dropout=0.1) as clf:
        before = clf.lora_state()
        method.fit(clf, None)
        probs = method.predict_proba(toy_eval)
        after = clf.lora_state()
    torch.testing.assert_close(probs, logits.softmax(-1), atol=1e-5, rtol=1e-4)
    assert all(torch.equal(before[n], after[n]) for n in before)  # nothing trained
    assert method.history == []


def test_refuses_an_adapter_that_was_trained(toy_classifier, quick_settings):
    method = get_method("pretrained")(train=quick_settings())
    with toy_classifier() as clf:
        with torch.no_grad():
            for name, p in clf.lora_named_parameters():
                if "lora_B" in name:
                    p.add_(1.0)
        with pytest.raises(ValueError, match="untrained adapters"):
            method.fit(clf, None)


def test_it_declares_that_it_trains_nothing():
    assert get_method("pretrained").trains is False
    assert get_method("adamw").trains is True
    assert get_method("pretrained+temperature").trains is False
