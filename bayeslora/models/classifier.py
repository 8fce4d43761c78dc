"""The answer-token classifier: a causal LM with LoRA adapters, read as a K-way classifier.

The paper's protocol scores a multiple-choice question by the next-token logits of the
answer letters right after "Answer:". We never materialise full-vocabulary logits: the
decoder's last hidden state is multiplied by just the K answer-token rows of the output
layer, which on SmolLM2 saves ~12% of a training step and all of the [B, T, V] memory.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class LoraSettings:
    """LoRA configuration. Defaults are the paper's: r=8, alpha=16, dropout 0.1 on q/v."""

    r: int = 8
    alpha: float = 16
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    bias: str = "none"

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        if self.r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got r={self.r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

    def to_peft(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            bias=self.bias,
            task_type="CAUSAL_LM",
        )


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions that start at 0 at the first real token, so left padding changes nothing."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class AnswerTokenClassifier(nn.Module):
    """``forward(input_ids, attention_mask) -> logits [batch, K]`` over the answer tokens.

    Wraps a peft model. Only the LoRA weights are trainable; ``lora_parameters()`` lists
    them in a fixed order, which optimizers, SWA and Laplace rely on.
    """

    def __init__(self, peft_model: nn.Module, answer_token_ids: Sequence[int]):
        super().__init__()
        if len(answer_token_ids) < 2:
            raise ValueError(f"need at least 2 answer tokens, got {list(answer_token_ids)}")
        if len(set(answer_token_ids)) != len(answer_token_ids):
            raise ValueError(f"answer token ids must be distinct, got {list(answer_token_ids)}")
        self.peft_model = peft_model
        causal_lm = peft_model.get_base_model()
        vocab = causal_lm.get_output_embeddings().weight.shape[0]
        if max(answer_token_ids) >= vocab:
            raise ValueError(
                f"answer token id {max(answer_token_ids)} is outside the vocabulary ({vocab})"
            )
        self.register_buffer(
            "answer_token_ids",
            torch.tensor(list(answer_token_ids), dtype=torch.long),
            persistent=False,
        )
        # Gemma-2 style models squash their logits; keep that so probabilities match the LM's.
        self.logit_softcap = getattr(causal_lm.config, "final_logit_softcapping", None)

    # Looked up, not stored: assigning them as attributes would register the decoder and
    # output layer as submodules a second time (torch.func.functional_call then swaps
    # their weights twice and restores them once, as laplace-torch found).
    @property
    def decoder(self) -> nn.Module:
        return self.peft_model.get_base_model().get_decoder()

    @property
    def output_layer(self) -> nn.Module:
        return self.peft_model.get_base_model().get_output_embeddings()

    @property
    def num_classes(self) -> int:
        return len(self.answer_token_ids)

    @property
    def device(self) -> torch.device:
        return self.output_layer.weight.device

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **_: object) -> Tensor:
        hidden = self.decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        ).last_hidden_state[:, -1]  # left padding: the last position is the prompt's end
        rows = self.output_layer.weight[self.answer_token_ids]
        logits = hidden.float() @ rows.float().T
        bias = getattr(self.output_layer, "bias", None)
        if bias is not None:
            logits = logits + bias[self.answer_token_ids].float()
        if self.logit_softcap:
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        return logits

    # -- LoRA weights -------------------------------------------------------------------

    def lora_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.peft_model.named_parameters() if p.requires_grad]

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.lora_named_parameters()]

    def lora_state(self) -> dict[str, Tensor]:
        """A detached copy of the adapter weights (small: the base is not copied)."""
        return {n: p.detach().clone() for n, p in self.lora_named_parameters()}

    @torch.no_grad()
    def load_lora_state(self, state: dict[str, Tensor]) -> None:
        params = dict(self.lora_named_parameters())
        if params.keys() != state.keys():
            missing, extra = params.keys() - state.keys(), state.keys() - params.keys()
            raise KeyError(
                f"adapter state does not match the model: missing {missing}, extra {extra}"
            )
        for name, value in state.items():
            params[name].copy_(value)

    def lora_dropout_modules(self) -> list[nn.Module]:
        """The LoRA dropout layers (what MC Dropout switches on at test time)."""
        return [
            m
            for name, m in self.peft_model.named_modules()
            if ".lora_dropout." in f".{name}." and isinstance(m, nn.Dropout)
        ]

    def save_adapter(self, directory: str) -> None:
        """The adapter in peft's format (adapter_model.safetensors + adapter_config.json)."""
        self.peft_model.save_pretrained(directory, safe_serialization=True)


@contextmanager
def lora_classifier(
    base_model: nn.Module,
    answer_token_ids: Sequence[int],
    lora: LoraSettings,
    *,
    seed: int = 0,
) -> Iterator[AnswerTokenClassifier]:
    """Attach fresh LoRA adapters to ``base_model`` for one run and remove them afterwards.

    The base model is loaded once and reused across methods and seeds (for a 7B model a
    reload costs minutes); peft's ``unload()`` restores the original modules on exit.
    """
    from peft import get_peft_model
    from peft.utils import prepare_model_for_kbit_training

    if getattr(base_model, "is_loaded_in_8bit", False) or getattr(
        base_model, "is_loaded_in_4bit", False
    ):
        base_model = prepare_model_for_kbit_training(base_model, use_gradient_checkpointing=False)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft 0.21 calls transformers' deprecated is_gradient_checkpointing; not ours to fix.
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
        )
        torch.manual_seed(seed)  # LoRA A is randomly initialised; B starts at zero
        peft_model = get_peft_model(base_model, lora.to_peft())
    try:
        yield AnswerTokenClassifier(peft_model, answer_token_ids)
    finally:
        peft_model.unload()
        # unload() leaves peft's bookkeeping on the base; without it the next run's
        # adapters would be attached as a second adapter instead of fresh ones.
        if hasattr(base_model, "peft_config"):
            del base_model.peft_config
        base_model.requires_grad_(False)
