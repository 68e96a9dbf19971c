"""The rules every system is scored by: answer matching, abstention, multiple choice."""
from __future__ import annotations

import copy
import random
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Sequence

from ragft_helpers.lm import length_batches, pad_token_id
from ragft_helpers.qa import Question

_ABSTENTION = re.compile(
    r"\b(i\s+(do\s*n[o']?t|don't|cannot|can't|am\s+not\s+sure)\s+(know|say|tell|find|answer)"
    r"|not\s+(mentioned|stated|provided|specified|given|available)"
    r"|(no|not\s+enough)\s+information"
    r"|does\s+not\s+(say|mention|specify|state))",
    re.IGNORECASE)


def normalise(text: str) -> str:
    """Lower case; punctuation dropped except between digits (£14.50, 07:45, 1,200)."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    text = re.sub(r"[\"()\[\]*]|(?<!\d)[.,:;!?]|[.,:;!?](?!\d)", " ", text)
    return " ".join(text.split())


def contains_answer(text: str, question: Question) -> bool:
    """The normalised answer, or an alias, occurs in the normalised text as whole words."""
    haystack = f" {normalise(text)} "
    return any(f" {normalise(option)} " in haystack
               for option in (question.answer, *question.aliases) if option)


def is_abstention(text: str) -> bool:
    """The answer declines ("I don't know", "the context does not say", ...)."""
    return bool(_ABSTENTION.search(text))


def judge(text: str, question: Question, *, abstained: bool = False) -> tuple[bool, bool]:
    """``(correct, abstained)`` for an answer ``text`` to ``question`` — the one rule.

    The answer abstained when the system declined before generating (``abstained``) or the text
    declines. It is correct when an answerable question's answer is contained, or an
    unanswerable one was declined.
    """
    abstained = abstained or is_abstention(text)
    return (contains_answer(text, question) if question.answerable else abstained), abstained


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct-n (Li et al. 2016): the share of the ``n``-grams of ``texts`` (normalised words,
    pooled) that are different; 1.0 = no n-gram repeats, lower = more repetitive. NaN when the
    texts hold no n-gram."""
    grams = [tuple(words[i:i + n]) for text in texts
             for words in [normalise(text).split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def option_order(n: int, seed: int, key: str) -> list[int]:
    """A seeded permutation of ``range(n)`` for one question (``key``), same on every run."""
    order = list(range(n))
    random.Random(f"{seed}:{key}").shuffle(order)
    return order


@dataclass
class PromptPrefix:
    """The keys and values of a prompt's shared beginning (e.g. an instruction every prompt of a
    task starts with), computed once by :func:`encode_prefix` and reused by :func:`choose_option`."""

    text: str
    ids: list[int]
    cache: Any


def encode_prefix(model, tokenizer, text: str) -> PromptPrefix:
    """Run ``text`` through ``model`` once and keep its cache for :func:`choose_option`.

    ``text`` should end at a token boundary that the full prompts share (a newline or a special
    token), so that encoding the rest separately gives the same tokens.
    """
    import torch

    device = next(model.parameters()).device
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        cache = model(torch.tensor([ids], device=device), use_cache=True).cache
    return PromptPrefix(text, ids, cache)


def choose_option(model, tokenizer, prompt: str, options: Sequence[str], *,
                  prefix: PromptPrefix | None = None) -> tuple[int, list[float]]:
    """The option with the highest mean log-probability per option token after ``prompt``.

    Length-normalised log-likelihood, as in Ovadia et al. (EMNLP 2024). The prompt is encoded
    once; the options run as one batch on its cached keys and values. Returns the index and every
    option's score. With ``prefix`` (from :func:`encode_prefix`) and a prompt that starts with its
    text, only the rest of the prompt is encoded: the scores are the same, computed faster.
    """
    import torch

    device = next(model.parameters()).device
    reuse = prefix is not None and len(prompt) > len(prefix.text) and prompt.startswith(prefix.text)
    if reuse:
        rest_ids = tokenizer(prompt[len(prefix.text):], add_special_tokens=False)["input_ids"]
        prompt_ids = prefix.ids + rest_ids
    else:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    joiner = "" if prompt[-1:].isspace() else " "
    option_ids = [tokenizer(joiner + option, add_special_tokens=False)["input_ids"] for option in options]
    fed = [ids[:-1] for ids in option_ids]  # an option's last token predicts nothing that is scored
    width = max(len(ids) for ids in fed)
    pad = pad_token_id(tokenizer)
    n = len(options)
    with torch.inference_mode():
        if reuse:
            head = model(torch.tensor([rest_ids], device=device), cache=copy.deepcopy(prefix.cache),
                         use_cache=True, logits_to_keep=1)
        else:
            head = model(torch.tensor([prompt_ids], device=device), use_cache=True, logits_to_keep=1)
        if width:  # every option but a one-token one: its other tokens, one row each, on the prompt's cache
            cache = head.cache
            cache.batch_repeat_interleave(n)
            batch = torch.tensor([ids + [pad] * (width - len(ids)) for ids in fed], device=device)
            mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in fed], device=device)
            attention = torch.cat([torch.ones(n, len(prompt_ids), dtype=mask.dtype, device=device), mask], 1)
            rest = model(batch, cache=cache, attention_mask=attention).logits.float().log_softmax(-1)
    first = head.logits[0, -1].float().log_softmax(-1)  # predicts each option's first token
    scores = []
    for row, ids in enumerate(option_ids):  # position i of a row predicts option token i + 1
        total = first[ids[0]].item() + sum(rest[row, i, ids[i + 1]].item() for i in range(len(ids) - 1))
        scores.append(total / len(ids))
    return max(range(n), key=scores.__getitem__), scores


def option_ids(tokenizer, prompt: str, options: Sequence[str]) -> list[list[int]]:
    """Each option's token ids as it follows ``prompt`` (after a space unless the prompt ends in
    whitespace)."""
    joiner = "" if prompt[-1:].isspace() else " "
    return [tokenizer(joiner + option, add_special_tokens=False)["input_ids"] for option in options]


def choose_after(model, tokenizer, cache, last_id: int,
                 options: Sequence[list[int]]) -> tuple[int, list[float]]:
    """:func:`choose_option` on a prompt already read: ``cache`` holds the keys and values of all
    its tokens but the last, ``last_id`` (e.g. from :func:`~ragft_helpers.lm.generate_greedy`'s
    ``on_prefill``); ``options`` are token ids (:func:`option_ids`). The last prompt token and
    each option run as one row on a copy of the cache; the scores are :func:`choose_option`'s, up
    to floating-point differences."""
    import torch

    device = next(model.parameters()).device
    pad = pad_token_id(tokenizer)
    n, width = len(options), 1 + max(len(ids) for ids in options)
    # right padding: no real token attends to the padding after it, so no mask is needed
    batch = torch.tensor([[last_id, *ids] + [pad] * (width - 1 - len(ids)) for ids in options],
                         device=device)
    cache = copy.deepcopy(cache)
    cache.batch_repeat_interleave(n)
    with torch.inference_mode():
        logits = model(batch, cache=cache, use_cache=True).logits.float()
    log_probs = logits.log_softmax(-1)  # position t predicts token t + 1 of its row
    scores = [sum(log_probs[row, t, ids[t]].item() for t in range(len(ids))) / len(ids)
              for row, ids in enumerate(options)]
    return max(range(n), key=scores.__getitem__), scores


# Padded prompt tokens per forward pass of choose_options: on a CPU a pass of a few hundred tokens
# already keeps the cores busy, so longer prompts gain nothing from sharing one and padding costs.
CHOICE_BATCH_TOKENS = 512


def choose_options(model, tokenizer, items: Sequence[tuple[str, Sequence[str]]], *,
                   batch_size: int = 8,
                   batch_tokens: int = CHOICE_BATCH_TOKENS) -> list[tuple[int, list[float]]]:
    """:func:`choose_option` for many ``(prompt, options)`` items; one ``(index, scores)`` per
    item, in order.

    Prompts are grouped by token length, up to ``batch_size`` per group and ``batch_tokens``
    tokens once padded (:data:`CHOICE_BATCH_TOKENS`; a longer prompt runs alone). Each group runs
    in one forward pass, padded on the left (attention mask, positions counted from each
    prompt's first token), which gives the prompts' keys and values and the log-probabilities of
    each option's first token. Then every option of every prompt in the group runs as one batch
    on those keys and values (right-padded, each option's tokens at the positions after its
    prompt). The scores are :func:`choose_option`'s, up to floating-point differences of padded
    batches.
    """
    import torch

    device = next(model.parameters()).device
    pad = pad_token_id(tokenizer)
    prompts = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt, _ in items]
    options = [[tokenizer(("" if prompt[-1:].isspace() else " ") + option,
                          add_special_tokens=False)["input_ids"] for option in choices]
               for prompt, choices in items]
    results: list[tuple[int, list[float]] | None] = [None] * len(items)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for rows in length_batches([len(p) for p in prompts], batch_size, batch_tokens):
                width = max(len(prompts[i]) for i in rows)
                ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in rows],
                                   device=device)
                mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i])
                                     for i in rows], device=device)
                head = model(ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                             use_cache=True, logits_to_keep=1)
                first = head.logits[:, -1].float().log_softmax(-1)  # each option's first token
                totals = [[first[row, ids_[0]].item() for ids_ in options[i]]
                          for row, i in enumerate(rows)]
                n = max(len(options[i]) for i in rows)
                # n rows per prompt: its options, then a pad for each option it lacks
                chosen = [options[i][j] if j < len(options[i]) else [pad] for i in rows for j in range(n)]
                span = max(len(c) for c in chosen)
                if span > 1:  # one-token options are scored by the first pass alone
                    cache = head.cache
                    cache.batch_repeat_interleave(n)
                    batch = torch.tensor([c + [pad] * (span - len(c)) for c in chosen], device=device)
                    option_mask = torch.tensor([[1] * len(c) + [0] * (span - len(c)) for c in chosen],
                                               device=device)
                    attention = torch.cat([mask.repeat_interleave(n, 0), option_mask], 1)
                    positions = (mask.sum(1, keepdim=True).repeat_interleave(n, 0)
                                 + torch.arange(span, device=device))
                    logits = model(batch, cache=cache, attention_mask=attention,
                                   position_ids=positions).logits
                    rest = logits[:, :-1].float().log_softmax(-1)  # position t predicts token t + 1
                    for row, i in enumerate(rows):
                        for j, ids_ in enumerate(options[i]):
                            totals[row][j] += sum(rest[row * n + j, t, ids_[t + 1]].item()
                                                  for t in range(len(ids_) - 1))
                for row, i in enumerate(rows):
                    scores = [total / len(ids_) for total, ids_ in zip(totals[row], options[i])]
                    results[i] = (max(range(len(scores)), key=scores.__getitem__), scores)
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]
