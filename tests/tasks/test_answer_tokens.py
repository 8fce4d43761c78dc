"""The answer-token ids must be the tokens that really follow "Answer:" in a prompt.

A wrong mapping trains and evaluates without error, on the wrong logits, so these
tests pin the SmolLM2 ids and check them against real prompts.
"""

import pytest

from bayeslora.tasks import answer_token_ids

SMOLLM2_LETTERS = [330, 389, 340, 422]  # " A", " B", " C", " D"
SMOLLM2_FALSE_TRUE = [4178, 3635]  # " False", " True"


def test_smollm2_letter_ids(tokenizer):
    ids = answer_token_ids(tokenizer, ("A", "B", "C", "D"))
    assert ids == SMOLLM2_LETTERS
    assert tokenizer.convert_ids_to_tokens(ids) == ["ĠA", "ĠB", "ĠC", "ĠD"]
    # The bare letters are different tokens, and not what follows "Answer:".
    bare = [tokenizer.convert_tokens_to_ids(c) for c in "ABCD"]
    assert bare == [49, 50, 51, 52]
    assert not set(bare) & set(ids)


def test_smollm2_true_false_ids(tokenizer):
    assert answer_token_ids(tokenizer, ("False", "True")) == SMOLLM2_FALSE_TRUE


def test_ids_follow_real_prompts(tokenizer, packaged):
    # For every task: a real prompt + " <label>" tokenizes to the prompt's tokens
    # followed by exactly the returned id.
    for splits in packaged.values():
        ids = answer_token_ids(tokenizer, splits.task.answer_labels)
        for example in (splits.eval[0], splits.train[-1]):
            prompt_ids = tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
            for label, token in zip(splits.task.answer_labels, ids, strict=True):
                full = tokenizer(example.prompt + " " + label, add_special_tokens=False)[
                    "input_ids"
                ]
                assert full[-1] == token
                assert full[:-1] == prompt_ids
        # And the same ids come out when the whole prompt is the prefix.
        assert (
            answer_token_ids(tokenizer, splits.task.answer_labels, prefix=splits.eval[0].prompt)
            == ids
        )


def test_falls_back_to_no_space_when_space_splits(char_tokenizer):
    # Character tokenizer: " A" is two tokens, "A" is one, so the attached form is used.
    assert answer_token_ids(char_tokenizer(), ("A", "B")) == [ord("A"), ord("B")]


def test_multi_token_answer_is_an_error(tokenizer, char_tokenizer):
    with pytest.raises(ValueError, match=r"tokenizer 'char-tokenizer': answer 'AB'"):
        answer_token_ids(char_tokenizer(), ("A", "AB"))
    with pytest.raises(ValueError, match="smollm2.*answer 'Photosynthesis'"):
        answer_token_ids(tokenizer, ("A", "Photosynthesis"))


def test_duplicate_ids_are_an_error(tokenizer):
    with pytest.raises(ValueError, match="answers 'A' and 'A' both become token 330"):
        answer_token_ids(tokenizer, ("A", "A"))
