"""Language-model basics: tokens, next-token probabilities, generation, perplexity, sizes.

Everything notebook 01 needs, and nothing of training; later stages build on it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ragft_helpers.config import Settings, get_settings


# ---- tokens and probabilities --------------------------------------------------------------------

def token_table(tokenizer, text: str):
    """One row per token of ``text``: position, token string, id, and the text it covers."""
    import pandas as pd

    encoded = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    rows = []
    for position, (token_id, (start, end)) in enumerate(zip(encoded["input_ids"],
                                                             encoded["offset_mapping"])):
        rows.append({"position": position, "token": tokenizer.convert_ids_to_tokens(token_id),
                     "id": token_id, "covers": text[start:end]})
    return pd.DataFrame(rows)


def next_token_distribution(model, tokenizer, text: str, *, top_n: int = 10,
                            temperature: float = 1.0):
    """The ``top_n`` most likely next tokens after ``text`` with their probabilities."""
    import pandas as pd
    import torch

    if temperature <= 0:
        raise ValueError("temperature must be > 0; use greedy decoding for temperature 0.")
    encoded = tokenizer(text, return_tensors="pt").to(next(model.parameters()).device)
    with torch.no_grad():
        logits = model(**encoded).logits[0, -1]
    probabilities = torch.softmax(logits.float() / temperature, dim=-1)
    top = torch.topk(probabilities, top_n)
    return pd.DataFrame({
        "token": [tokenizer.decode([i]) for i in top.indices.tolist()],
        "id": top.indices.tolist(),
        "probability": top.values.tolist(),
    })


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights count once."""
    parameters = list(model.parameters())
    return (sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters))


def pad_token_id(tokenizer) -> int:
    """The id to pad with: the tokenizer's pad token, else its EOS token (GPT-2 has no pad token)."""
    return tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id


def ensure_pad_token(tokenizer):
    """Give the tokenizer a pad token (the EOS token) when it has none, as GPT-2's tokenizer.

    The data collator pads every batch to one length and sets the labels of padding to -100, so
    padding is ignored by the loss; for that it needs a pad token. Reusing EOS adds no new
    embedding row. One consequence: the collator also sets the labels of real EOS tokens to -100.
    Training blocks are full length, so nothing is padded and only the EOS separators between
    articles go unscored.
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer



# ---- generation ----------------------------------------------------------------------------------

def _text_stop(tokenizer, prompt_length: int, stop: Callable[[str], bool]):
    """A ``StoppingCriteria`` that ends a row once ``stop`` holds for its decoded continuation."""
    import torch
    from transformers import StoppingCriteria

    class TextStop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            done = [stop(tokenizer.decode(row[prompt_length:], skip_special_tokens=True))
                    for row in input_ids]
            return torch.tensor(done, device=input_ids.device)

    return TextStop()


def generate(model, tokenizer, prompts: str | Iterable[str], *, max_new_tokens: int,
             do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, seed: int | None = None, add_special_tokens: bool = True,
             stop: Callable[[str], bool] | None = None) -> list[str]:
    """The continuation (prompt excluded) of each prompt; greedy unless ``do_sample``.

    With ``seed``, the generator is re-seeded before each prompt, so a sample does not depend on
    the prompts before it. ``stop`` ends generation early once it returns True for the text
    generated so far (e.g. "the first sentence is complete"). ``add_special_tokens=False`` for
    prompts that already hold them (a chat template's output).
    """
    import torch
    from transformers import StoppingCriteriaList

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample,
                               "pad_token_id": pad_token_id(tokenizer)}
    if do_sample:
        sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        options.update({key: value for key, value in sampling.items() if value is not None})
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    continuations = []
    try:
        with torch.inference_mode():
            for prompt in prompts:
                if seed is not None:
                    torch.manual_seed(seed)
                encoded = tokenizer(prompt, return_tensors="pt",
                                    add_special_tokens=add_special_tokens).to(device)
                length = encoded["input_ids"].size(1)
                if stop is not None:
                    options["stopping_criteria"] = StoppingCriteriaList(
                        [_text_stop(tokenizer, length, stop)])
                output = model.generate(**encoded, **options)
                continuations.append(tokenizer.decode(output[0, length:], skip_special_tokens=True))
    finally:
        model.train(was_training)
    return continuations


@dataclass(frozen=True)
class DecodingChoice:
    strategy: str  # "greedy" or "sampling"
    temperature: float = 1.0
    top_k: int = 0  # 0 = no top-k cut
    top_p: float = 1.0  # 1.0 = no nucleus cut
    seed: int = 0


def decode_with(model, tokenizer, prompt: str, choice: DecodingChoice, *,
                max_new_tokens: int) -> str:
    """Continue ``prompt`` with one decoding strategy; the handler behind the sampling widget."""
    if choice.strategy == "greedy":
        return generate(model, tokenizer, prompt, max_new_tokens=max_new_tokens)[0]
    if choice.strategy != "sampling":
        raise ValueError(f"strategy {choice.strategy!r}: use 'greedy' or 'sampling'.")
    return generate(model, tokenizer, prompt, max_new_tokens=max_new_tokens, do_sample=True,
                    temperature=choice.temperature, top_k=choice.top_k or None,
                    top_p=choice.top_p if choice.top_p < 1.0 else None, seed=choice.seed)[0]



# ---- perplexity ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float  # exp(mean_nll)
    mean_nll: float  # mean negative log-likelihood per predicted token, nats
    n_tokens: int  # tokens predicted, each once
    n_windows: int  # forward passes


def _joined_text(texts_or_dataset) -> str:
    if isinstance(texts_or_dataset, str):
        return texts_or_dataset
    if hasattr(texts_or_dataset, "column_names"):
        texts_or_dataset = texts_or_dataset["text"]
    return "\n\n".join(texts_or_dataset)


def window_starts(n_tokens: int, max_length: int, stride: int) -> list[int]:
    """Start offsets of the sliding windows; the last window reaches the end of the text."""
    starts = []
    for begin in range(0, n_tokens, stride):
        starts.append(begin)
        if begin + max_length >= n_tokens:
            break
    return starts


def perplexity(model, tokenizer, texts_or_dataset, *, max_length: int, stride: int | None = None,
               max_tokens: int | None = None, progress: bool = True) -> PerplexityResult:
    """Perplexity by the sliding-window method of the transformers perplexity guide.

    The texts are joined with blank lines and tokenized; the first ``max_tokens`` tokens are
    scored. Windows of ``max_length`` tokens start every ``stride`` tokens; tokens that an earlier
    window already scored are context only (label -100). A window's first token has no context
    in it, so it is predicted only when an earlier window covers it: with ``stride < max_length``
    every token but the text's first is predicted, with ``stride == max_length`` every token but
    each window's first. The summed NLL is divided by the exact count of predicted tokens.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    stride = stride or max_length
    if not 0 < stride <= max_length:
        raise ValueError(f"stride must be in 1..max_length ({max_length}), got {stride}")
    # verbose=False: no "longer than the maximum sequence length" warning; the windows keep each
    # forward pass within max_length.
    input_ids = tokenizer(_joined_text(texts_or_dataset), return_tensors="pt", verbose=False).input_ids
    if max_tokens is not None:
        input_ids = input_ids[:, :max_tokens]
    n_tokens = input_ids.size(1)
    if n_tokens < 2:
        raise ValueError("Perplexity needs at least 2 tokens of text.")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll_sum, predicted, scored_until = 0.0, 0, 0
    starts = window_starts(n_tokens, max_length, stride)
    try:
        with torch.no_grad():
            for begin in tqdm(starts, desc="Perplexity", disable=not progress):
                end = min(begin + max_length, n_tokens)
                window = input_ids[:, begin:end].to(device)
                labels = window.clone()
                labels[:, : scored_until - begin] = -100  # scored by an earlier window
                logits = model(window).logits[:, :-1].float()
                targets = labels[:, 1:]  # position i predicts token i + 1
                nll_sum += F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                           ignore_index=-100, reduction="sum").item()
                predicted += int((targets != -100).sum())
                scored_until = end
    finally:
        model.train(was_training)
    mean_nll = nll_sum / predicted
    return PerplexityResult(math.exp(mean_nll), mean_nll, predicted, len(starts))


def validation_perplexity(model, tokenizer, wikitext, settings: Settings | None = None,
                          *, progress: bool = True) -> PerplexityResult:
    """Perplexity on the validation split with the profile's budgets (block_size, eval_stride,
    eval_max_tokens)."""
    profile = (settings or get_settings()).profile
    return perplexity(model, tokenizer, wikitext["validation"], max_length=profile.block_size,
                      stride=profile.eval_stride, max_tokens=profile.eval_max_tokens,
                      progress=progress)


