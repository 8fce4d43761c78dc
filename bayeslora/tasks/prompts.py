"""Prompt templates: how one question becomes the text the model reads.

The formats are those of Laplace-LoRA (Yang et al. 2024, repository
adamxyang/laplace-lora, ``run_gpt.py``), which IVON-LoRA (Cong et al. 2024) follows;
the same strings appear in later Bayesian-LoRA code (e.g. BLoB). The classifier reads
the next-token logits of the answer labels at the last position, so every prompt
ends in "Answer:".

``laplace_lora_mc`` (ARC-Easy, ARC-Challenge, OpenBookQA, user jsonl files)::

    Select one of the choices that answers the following question: {question} Choices: A. {c0}. B. {c1}. C. {c2}. D. {c3}. Answer:

  As in Laplace-LoRA, each choice is capitalised and gets a final "." unless it has
  one, and choices are lettered A., B., ... by position (ARC's numeric keys 1-4 map
  to A-D). A jsonl record with a ``context`` gets "Context: {context} " in front.

``laplace_lora_winogrande``::

    Select one of the choices that answers the following question: {sentence} Choices: A. {option1}. B. {option2}. Answer:

  The original writes "B {option2}." without the period after B; we write "B." so
  that every letter is formatted alike. Options are not capitalised (as in the
  original).

``laplace_lora_boolq``::

    Context: {passage} Answer the question with only True or False: {question}? Answer:

  The original is "Answer the question with only True or False: {question} Context:
  {passage}" followed by the tokenizer's EOS token, and the answer ("False"/"True")
  is read after the EOS. We end in "Answer:" like every other task (there is no EOS
  we could rely on across tokenizers), and put the passage first so that truncating
  from the left (``encoding.py``) shortens the passage but keeps the instruction,
  the question and "Answer:". BoolQ questions have no question mark; we add one.

Cloze templates (``choices`` scoring, ``scoring.py``) give, per choice, a pair
(context, continuation); the choice's score is log p(continuation | context). They are
those of lm-evaluation-harness (EleutherAI, ``lm_eval/tasks``), where the same model
family is usually evaluated, so that zero-shot numbers can be compared:

``cloze_question`` (ARC-Easy/Challenge: ``arc_easy.yaml``; user jsonl files)::

    Question: {question}\nAnswer:  +  " {choice}"

  A jsonl ``context`` goes in front as "{context}\n".

``cloze_stem`` (OpenBookQA: ``openbookqa.yaml``): the question stem alone, then " {choice}".

``cloze_winogrande`` (``winogrande/preprocess_winogrande.py``, the "partial evaluation"
of Trinh & Le 2018): the option fills the blank, and what is scored is the rest of the
sentence, which is the same for both options::

    {sentence up to "_"}{option}  +  " {sentence after "_"}"

``cloze_boolq`` (``super_glue/boolq/default.yaml``)::

    {passage}\nQuestion: {question}?\nAnswer:  +  " False" / " True"

  The answer words are the task's ``cloze_answers`` (``registry.py``, which says why
  these words rather than lm-evaluation-harness's " no"/" yes"). Truncation keeps the end of the context (``encoding.py``): a long
  passage loses its beginning.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence

from bayeslora.tasks.names import unknown_name

# (question, choices, context) -> prompt. ``choices`` is empty for templates whose
# answers are fixed words rather than listed options (BoolQ).
Template = Callable[[str, Sequence[str], str | None], str]

LETTERS = string.ascii_uppercase
INSTRUCTION = "Select one of the choices that answers the following question:"


def letters(n: int) -> tuple[str, ...]:
    """The answer labels of an ``n``-choice question: ("A", "B", ...)."""
    if not 2 <= n <= len(LETTERS):
        raise ValueError(f"a question needs between 2 and {len(LETTERS)} choices, not {n}")
    return tuple(LETTERS[:n])


def _as_sentence(text: str, *, capitalize: bool) -> str:
    # Laplace-LoRA's convert_choices_to_alpha: end each choice with "." and upper-case
    # its first letter, so "A. cellular telephone B. ..." reads "A. Cellular telephone. B. ...".
    text = text.strip()
    if not text.endswith("."):
        text += "."
    if capitalize:
        text = text[:1].upper() + text[1:]
    return text


def _listed(choices: Sequence[str], *, capitalize: bool) -> str:
    return " ".join(
        f"{letter}. {_as_sentence(choice, capitalize=capitalize)}"
        for letter, choice in zip(letters(len(choices)), choices, strict=True)
    )


def _context(context: str | None) -> str:
    return f"Context: {context.strip()} " if context else ""


def laplace_lora_mc(question: str, choices: Sequence[str], context: str | None = None) -> str:
    """Lettered multiple choice (ARC, OpenBookQA, jsonl files)."""
    listed = _listed(choices, capitalize=True)
    return f"{_context(context)}{INSTRUCTION} {question.strip()} Choices: {listed} Answer:"


def laplace_lora_winogrande(
    question: str, choices: Sequence[str], context: str | None = None
) -> str:
    """The WinoGrande sentence with its blank "_" and the two options A and B."""
    listed = _listed(choices, capitalize=False)
    return f"{_context(context)}{INSTRUCTION} {question.strip()} Choices: {listed} Answer:"


def laplace_lora_boolq(question: str, choices: Sequence[str], context: str | None = None) -> str:
    """Passage, then the yes/no question; the answers are the words "False" and "True"."""
    question = question.strip()
    if not question.endswith("?"):
        question += "?"
    return f"{_context(context)}Answer the question with only True or False: {question} Answer:"


TEMPLATES: dict[str, Template] = {
    "laplace_lora_mc": laplace_lora_mc,
    "laplace_lora_winogrande": laplace_lora_winogrande,
    "laplace_lora_boolq": laplace_lora_boolq,
}


# (question, choices, context) -> one (context, continuation) pair per choice. ``choices``
# are the record's (or, for BoolQ, the task's fixed answer words).
ClozeTemplate = Callable[[str, Sequence[str], str | None], tuple[tuple[str, str], ...]]


def _continuation(text: str) -> str:
    # lm-evaluation-harness's target_delimiter: one space between context and choice
    return " " + text.strip()


def cloze_question(
    question: str, choices: Sequence[str], context: str | None = None
) -> tuple[tuple[str, str], ...]:
    """ "Question: ...\nAnswer:" followed by each choice's text."""
    head = f"{context.strip()}\n" if context else ""
    prompt = f"{head}Question: {question.strip()}\nAnswer:"
    return tuple((prompt, _continuation(c)) for c in choices)


def cloze_stem(
    question: str, choices: Sequence[str], context: str | None = None
) -> tuple[tuple[str, str], ...]:
    """The question stem itself, continued by each choice (OpenBookQA stems are sentence starts)."""
    head = f"{context.strip()}\n" if context else ""
    return tuple((head + question.strip(), _continuation(c)) for c in choices)


def cloze_winogrande(
    question: str, choices: Sequence[str], context: str | None = None
) -> tuple[tuple[str, str], ...]:
    """The option in the blank as context; the rest of the sentence is what is scored."""
    blank = question.find("_")
    if blank < 0:
        raise ValueError(f"a WinoGrande sentence needs a blank '_': {question!r}")
    rest = question[blank + 1 :].strip()
    if not rest:
        raise ValueError(f"nothing follows the blank to score in {question!r}")
    head = f"{context.strip()}\n" if context else ""
    return tuple((head + question[:blank] + option, _continuation(rest)) for option in choices)


def cloze_boolq(
    question: str, choices: Sequence[str], context: str | None = None
) -> tuple[tuple[str, str], ...]:
    """Passage, question, "Answer:", then each answer word."""
    question = question.strip()
    if not question.endswith("?"):
        question += "?"
    head = f"{context.strip()}\n" if context else ""
    prompt = f"{head}Question: {question}\nAnswer:"
    return tuple((prompt, _continuation(c)) for c in choices)


CLOZE_TEMPLATES: dict[str, ClozeTemplate] = {
    "cloze_question": cloze_question,
    "cloze_stem": cloze_stem,
    "cloze_winogrande": cloze_winogrande,
    "cloze_boolq": cloze_boolq,
}


def render_cloze(
    name: str, question: str, choices: Sequence[str], context: str | None = None
) -> tuple[tuple[str, str], ...]:
    """The (context, continuation) pairs of one question under the cloze template ``name``."""
    try:
        template = CLOZE_TEMPLATES[name]
    except KeyError:
        raise unknown_name("cloze template", name, CLOZE_TEMPLATES) from None
    return template(question, choices, context)


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise unknown_name("template", name, TEMPLATES) from None


def render(name: str, question: str, choices: Sequence[str], context: str | None = None) -> str:
    """The prompt of one question under the template called ``name``."""
    return get_template(name)(question, choices, context)
