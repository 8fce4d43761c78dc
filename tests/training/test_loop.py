import contextlib

import pytest
import torch

from bayeslora.models.classifier import LoraSettings, lora_classifier
from bayeslora.tasks.encoding import TokenizedDataset
from bayeslora.training.loop import DivergedError, linear_schedule, predict_logits, train_loop
from bayeslora.training.settings import TrainSettings
from tests.methods.conftest import ANSWER_IDS, toy_examples


@pytest.fixture(scope="module")
def data(tokenizer):
    return TokenizedDataset(toy_examples(16), tokenizer, max_length=64)


def test_linear_schedule_with_and_without_warmup():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = linear_schedule(opt, TrainSettings(steps=4))
    lrs = []
    for _ in range(4):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == [1.0, 0.75, 0.5, 0.25]
    opt = torch.optim.SGD([param], lr=1.0)
    sched = linear_schedule(opt, TrainSettings(steps=6, warmup_steps=2))
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]


def _one_sgd_step(tiny_model, data, batch_size, grad_accum):
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings(dropout=0.0), seed=0) as clf:
        with torch.no_grad():  # make lora_B non-zero so every LoRA weight gets a gradient
            for name, p in clf.lora_named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
        opt = torch.optim.SGD(clf.lora_parameters(), lr=1.0)
        settings = TrainSettings(
            steps=1, batch_size=batch_size, grad_accum=grad_accum, progress=False
        )
        train_loop(clf, data, opt, settings)
        return clf.lora_state()


def test_gradient_accumulation_equals_the_large_batch(tiny_model, data):
    big = _one_sgd_step(tiny_model, data, batch_size=8, grad_accum=1)
    accumulated = _one_sgd_step(tiny_model, data, batch_size=4, grad_accum=2)
    for name in big:
        torch.testing.assert_close(big[name], accumulated[name], atol=1e-6, rtol=1e-5)


def test_sample_context_gets_unscaled_losses_per_micro_batch(tiny_model, data):
    entered = []

    @contextlib.contextmanager
    def context():
        entered.append(1)
        yield

    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings(dropout=0.0)) as clf:
        opt = torch.optim.SGD(clf.lora_parameters(), lr=0.0)
        settings = TrainSettings(steps=2, batch_size=4, grad_accum=2, progress=False)
        train_loop(clf, data, opt, settings, sample_context=context, samples_per_batch=3)
    assert len(entered) == 2 * 2 * 3


def test_diverging_loss_raises(tiny_model, data):
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings(dropout=0.0)) as clf:
        with torch.no_grad():
            clf.lora_parameters()[1].fill_(float("nan"))
        opt = torch.optim.SGD(clf.lora_parameters(), lr=0.1)
        with pytest.raises(DivergedError, match="nan at step 1"):
            train_loop(clf, data, opt, TrainSettings(steps=2, batch_size=4, progress=False))


def test_evaluation_and_logging_callbacks(tiny_model, data):
    seen = []
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings()) as clf:
        opt = torch.optim.AdamW(clf.lora_parameters(), lr=1e-3)
        settings = TrainSettings(steps=4, batch_size=4, eval_every=2, log_every=2, progress=False)
        history = train_loop(
            clf,
            data,
            opt,
            settings,
            evaluate=lambda: {"nll": 1.0},
            on_log=lambda step, m: seen.append((step, sorted(m))),
        )
    assert [s for s, _ in seen] == [2, 2, 4, 4]
    assert seen[1][1] == ["val_nll"] and "train_loss" in seen[0][1]
    assert history[0]["step"] == 2 and history[0]["examples_per_s"] > 0


def test_predict_logits_keeps_data_order(tiny_model, data):
    with lora_classifier(tiny_model, ANSWER_IDS, LoraSettings()) as clf:
        clf.eval()
        together = predict_logits(clf, data, batch_size=16)
        one_by_one = predict_logits(clf, data, batch_size=1)
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=1e-4)


def test_bad_settings():
    with pytest.raises(ValueError, match="steps"):
        TrainSettings(steps=0)
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainSettings(steps=3, warmup_steps=5)
