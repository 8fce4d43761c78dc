"""ChoiceLikelihoodClassifier against an independent reference: the causal LM's own
log-likelihood of each (context + continuation) sequence, computed one sequence at a time
from full-vocabulary logits."""

import pytest
import torch

from bayeslora.models.classifier import LoraSettings, branch_attention_mask, lora_classifier
from bayeslora.tasks.encoding import ChoiceDataset, EncodingSettings, encode
from bayeslora.tasks.spec import Example
from tests.tasks.conftest import CharTokenizer

QUESTIONS = [
    # shared context, continuations of different lengths, two sharing their first token
    (("Question: which is a colour?\nAnswer:",) * 3, (" blue", " the cat sat", " the moon")),
    # a second question of another length in the same batch: rows padded unevenly
    (
        ("Question: name a planet that is close to the sun\nAnswer:",) * 3,
        (" Mars", " Venus", " a rock"),
    ),
    # per-choice contexts (WinoGrande-style), shared continuation
    (
        ("The trophy did not fit because the trophy", "The trophy did not fit because the case"),
        (" was too big.", " was too big."),
    ),
]


def _examples(k: int):
    rows = [q for q in QUESTIONS if len(q[0]) == k]
    return [
        Example(f"q{i}", contexts[0], 0, k, tuple(zip(contexts, conts, strict=True)))
        for i, (contexts, conts) in enumerate(rows)
    ]


def _reference(lm, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context) from the LM's full logits over the whole text alone."""
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    split = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    logp = lm(input_ids=torch.tensor([whole])).logits[0].float().log_softmax(-1)
    return sum(logp[i - 1, whole[i]].item() for i in range(split, len(whole)))


@pytest.mark.parametrize("k", [3, 2])
@pytest.mark.parametrize("share_prefix", [True, False])
def test_scores_equal_each_sequence_scored_alone(tokenizer, tiny_model, k, share_prefix):
    examples = _examples(k)
    data = ChoiceDataset(examples, tokenizer, share_prefix=share_prefix)
    batch = data.collate([data[i] for i in range(len(data))])
    with lora_classifier(tiny_model, None, LoraSettings(dropout=0.0)) as clf, torch.no_grad():
        clf.eval()
        scores = clf(**{key: v for key, v in batch.items() if key != "labels"})
        lm = clf.peft_model
        expected = torch.tensor(
            [[_reference(lm, tokenizer, c, t) for c, t in e.scored] for e in examples]
        )
    assert scores.shape == (len(examples), k)
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)


def test_packing_encodes_the_shared_question_once(tokenizer):
    example = _examples(3)[0]
    packed = ChoiceDataset([example], tokenizer)
    separate = ChoiceDataset([example], tokenizer, share_prefix=False)
    context = len(tokenizer(example.scored[0][0], add_special_tokens=False)["input_ids"])
    (row,) = packed[0]["rows"]
    assert row.segments[:context] == [1] * context  # the question, once
    assert len(separate[0]["rows"]) == 3
    assert sum(len(r.ids) for r in separate[0]["rows"]) > len(row.ids) + context


def test_length_normalisation_divides_by_tokens_or_characters(tokenizer, tiny_model):
    examples = _examples(3)[:1]
    batches = {
        norm: encode(examples, tokenizer, EncodingSettings(length_norm=norm))
        for norm in ("none", "token", "char")
    }
    with lora_classifier(tiny_model, None, LoraSettings(dropout=0.0)) as clf, torch.no_grad():
        clf.eval()
        scores = {}
        for norm, data in batches.items():
            batch = data.collate([data[0]])
            scores[norm] = clf(**{key: v for key, v in batch.items() if key != "labels"})[0]
    tokens = torch.tensor(
        [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for _, t in examples[0].scored]
    )
    chars = torch.tensor([len(t.strip()) for _, t in examples[0].scored])  # without the space
    torch.testing.assert_close(scores["token"], scores["none"] / tokens)
    torch.testing.assert_close(scores["char"], scores["none"] / chars)


def test_truncation_cuts_the_shared_prefix_and_keeps_every_choice(tokenizer):
    context = "Question: " + "very " * 80 + "long?\nAnswer:"
    example = Example("long", context, 1, 2, ((context, " yes"), (context, " no way")))
    data = ChoiceDataset([example], tokenizer, max_length=32)
    (row,) = data[0]["rows"]
    assert len(row.ids) <= 32 and data.num_truncated == 1
    scored = [token for _, _, token, _ in data[0]["targets"]]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for _, t in example.scored]
    assert scored == ids[0] + ids[1]  # every choice token is still scored
    end = tokenizer(context, add_special_tokens=False)["input_ids"][-3:]
    assert row.ids[len(row.ids) - (len(ids[1]) - 1) - 3 :][:3] == end  # "Answer:" survived


def test_branch_mask_lets_a_branch_see_the_prefix_and_itself_only():
    segments = torch.tensor([[1, 1, 2, 2, 3, 0]])
    allowed = branch_attention_mask(segments, torch.float32)[0, 0] == 0
    assert allowed[3].tolist() == [True, True, True, True, False, False]
    assert allowed[4].tolist() == [True, True, False, False, True, False]
    assert allowed[5].tolist() == [False, False, False, False, False, True]  # padding: itself


def test_an_empty_choice_fails_with_its_example_named(tokenizer):
    example = Example("e1", "Q:", 0, 2, (("Q:", " a"), ("Q:", "")))
    with pytest.raises(ValueError, match="e1: choice 1's text '' adds no token"):
        ChoiceDataset([example], tokenizer)


def test_mixed_scorings_are_refused(tokenizer):
    letters = Example("a", "Q? Answer:", 0, 2)
    choices = Example("b", "Q:", 0, 2, (("Q:", " a"), ("Q:", " b")))
    with pytest.raises(ValueError, match="mix letters and choices"):
        encode([letters, choices], tokenizer)


def test_a_bos_tokenizer_starts_the_shared_row_with_bos():
    tokenizer = CharTokenizer(bos=True)
    example = Example("b", "Q:", 1, 2, (("Q:", " ab"), ("Q:", " c")))
    data = ChoiceDataset([example], tokenizer)
    (row,) = data[0]["rows"]
    assert data.bos_added and row.ids[:3] == [1, ord("Q"), ord(":")]
    # per choice: (row, position predicting the token, token, choice)
    assert data[0]["targets"] == [
        (0, 2, ord(" "), 0),
        (0, 3, ord("a"), 0),
        (0, 4, ord("b"), 0),
        (0, 2, ord(" "), 1),
        (0, 5, ord("c"), 1),
    ]
    assert row.positions == [0, 1, 2, 3, 4, 3]  # the second branch restarts after the prefix


def test_a_choice_longer_than_max_length_is_counted():
    example = Example("x", "Q:", 0, 2, (("Q:", " " + "a" * 20), ("Q:", " b")))
    data = ChoiceDataset([example], CharTokenizer(), max_length=8)
    assert data.num_truncated == 1 and data.num_over_length == 1
    assert data.info["num_over_length"] == 1
