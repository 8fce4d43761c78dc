"""A causal LM with LoRA adapters, read as a K-way classifier, under either scoring.

``AnswerTokenClassifier`` (``letters``, the paper's protocol) scores a multiple-choice
question by the next-token logits of the answer letters right after "Answer:". We never
materialise full-vocabulary logits: the decoder's last hidden state is multiplied by just
the K answer-token rows of the output layer, which on SmolLM2 saves ~12% of a training
step and all of the [B, T, V] memory.

``ChoiceLikelihoodClassifier`` (``choices``) scores choice k by the summed log-probability
of its continuation tokens (``tasks/encoding.py`` packs a question's choices into one row
behind their shared prefix). The output layer and its log-softmax run only at the
positions that predict a scored token, not at every position.

Both return ``[batch, K]`` logits from ``forward(**model_inputs(batch))``; every method is
written against that and the LoRA helpers of :class:`LoraClassifier`.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bayeslora.models.dropout import LoraDropout, use_lora_dropout


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
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"LoRA alpha must be a finite number > 0, got {self.alpha}")
        if not self.target_modules or len(set(self.target_modules)) != len(self.target_modules):
            raise ValueError(
                f"LoRA target modules must be a non-empty list without repeats, got "
                f"{list(self.target_modules)}"
            )

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


class LoraClassifier(nn.Module):
    """What every classifier over a peft model shares: the LoRA weights and the model parts.

    Only the LoRA weights are trainable; ``lora_parameters()`` lists them in a fixed order,
    which optimizers, SWA and Laplace rely on.
    """

    def __init__(self, peft_model: nn.Module):
        super().__init__()
        self.peft_model = peft_model
        causal_lm = peft_model.get_base_model()
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
    def device(self) -> torch.device:
        return self.output_layer.weight.device

    def _softcap(self, logits: Tensor) -> Tensor:
        if self.logit_softcap:
            return torch.tanh(logits / self.logit_softcap) * self.logit_softcap
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

    def lora_dropout_modules(self) -> list[LoraDropout]:
        """The LoRA dropout layers (what MC Dropout switches on at test time)."""
        return [m for m in self.peft_model.modules() if isinstance(m, LoraDropout)]

    def save_adapter(self, directory: str) -> None:
        """The adapter in peft's format (adapter_model.safetensors + adapter_config.json)."""
        self.peft_model.save_pretrained(directory, safe_serialization=True)


class AnswerTokenClassifier(LoraClassifier):
    """``forward(input_ids, attention_mask) -> logits [batch, K]`` over the answer tokens."""

    def __init__(self, peft_model: nn.Module, answer_token_ids: Sequence[int]):
        super().__init__(peft_model)
        if len(answer_token_ids) < 2:
            raise ValueError(f"need at least 2 answer tokens, got {list(answer_token_ids)}")
        if len(set(answer_token_ids)) != len(answer_token_ids):
            raise ValueError(f"answer token ids must be distinct, got {list(answer_token_ids)}")
        vocab = self.output_layer.weight.shape[0]
        if max(answer_token_ids) >= vocab:
            raise ValueError(
                f"answer token id {max(answer_token_ids)} is outside the vocabulary ({vocab})"
            )
        self.register_buffer(
            "answer_token_ids",
            torch.tensor(list(answer_token_ids), dtype=torch.long),
            persistent=False,
        )

    @property
    def num_classes(self) -> int:
        return len(self.answer_token_ids)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
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
        return self._softcap(logits)


def branch_attention_mask(segments: Tensor, dtype: torch.dtype) -> Tensor:
    """The additive ``[R, 1, T, T]`` mask of packed rows (``tasks/encoding.py``).

    Position i attends to position j <= i when j is in the shared prefix (segment 1) or in
    i's own branch; never to padding (0). A padded position attends to itself, so no row of
    the mask is all masked (its softmax would be NaN); its output is never read.
    """
    width = segments.shape[-1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segments.device).tril()
    query, key = segments[:, :, None], segments[:, None, :]
    allowed = causal & (query != 0) & (key != 0) & ((key == 1) | (key == query))
    allowed |= torch.eye(width, dtype=torch.bool, device=segments.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


class ChoiceLikelihoodClassifier(LoraClassifier):
    """``forward(**model_inputs(batch)) -> [batch, K]``: each choice's continuation
    log-likelihood (divided by ``choice_norm``), from a
    :class:`~bayeslora.tasks.encoding.ChoiceDataset` batch."""

    def _vocabulary_logits(self, hidden: Tensor) -> Tensor:
        """Full-vocabulary logits (float32) at the given positions."""
        layer = self.output_layer
        if layer.weight.device.type == "cpu" and layer.weight.dtype != torch.float32:
            # Measured (torch 2.13, AMD EPYC): the backward of this bf16 matmul falls back to
            # torch's naive single-threaded gemm, and a training step took minutes; in float32
            # it is one fast matmul (the weight is converted per call, which costs far less).
            bias = layer.bias.float() if getattr(layer, "bias", None) is not None else None
            return F.linear(hidden.float(), layer.weight.float(), bias)
        return layer(hidden).float()

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        segments: Tensor,
        position_ids: Tensor,
        score_index: Tensor,
        score_token: Tensor,
        score_choice: Tensor,
        choice_norm: Tensor,
    ) -> Tensor:
        dtype = self.decoder.get_input_embeddings().weight.dtype
        hidden = self.decoder(
            input_ids=input_ids,
            attention_mask=branch_attention_mask(segments, dtype),
            position_ids=position_ids,
            use_cache=False,
        ).last_hidden_state
        picked = hidden.flatten(0, 1)[score_index]  # only the positions that predict a choice token
        logits = self._softcap(self._vocabulary_logits(picked))
        token_logp = logits.log_softmax(-1).gather(-1, score_token[:, None]).squeeze(-1)
        scores = token_logp.new_zeros(choice_norm.numel()).index_add(0, score_choice, token_logp)
        return scores.view_as(choice_norm) / choice_norm


@contextmanager
def lora_classifier(
    base_model: nn.Module,
    answer_token_ids: Sequence[int] | None,
    lora: LoraSettings,
    *,
    seed: int = 0,
) -> Iterator[LoraClassifier]:
    """Attach fresh LoRA adapters to ``base_model`` for one run and remove them afterwards.

    ``answer_token_ids``: the letters protocol's K answer tokens, or None for choices
    scoring (:class:`ChoiceLikelihoodClassifier`).

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
    is_finalizing = sys.is_finalizing  # kept: at shutdown the module's globals may be gone
    try:
        use_lora_dropout(peft_model)
        if answer_token_ids is None:
            yield ChoiceLikelihoodClassifier(peft_model)
        else:
            yield AnswerTokenClassifier(peft_model, answer_token_ids)
    finally:
        # A script that entered this context and never left it closes it at interpreter
        # exit. The base dies with the process then, and unload() must not run: it starts
        # tqdm's monitor thread, and starting a thread during shutdown hangs forever (Python
        # 3.11; from 3.12 it raises, and tqdm prints a warning).
        if not is_finalizing():
            peft_model.unload()
            # unload() leaves peft's bookkeeping on the base; without it the next run's
            # adapters would be attached as a second adapter instead of fresh ones.
            if hasattr(base_model, "peft_config"):
                del base_model.peft_config
            base_model.requires_grad_(False)
