"""Language-model basics: tokens, next-token probabilities, generation, perplexity, sizes.

Everything notebook 01 needs, and nothing of training; later stages build on it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
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

@dataclass(frozen=True)
class Generation:
    """One prompt's greedy continuation and the time its batch took.

    The times are the whole batch's, measured once for all its rows: ``prefill_ms`` until the
    first new token (reading the prompts), ``decode_ms`` for the rest. A row's share of the batch
    is the time over ``batch_rows``.
    """

    text: str
    new_tokens: int  # tokens generated up to and including the one that ended the row
    prefill_ms: float
    decode_ms: float
    batch_rows: int  # prompts generated together with this one (1 = alone)


def _row_progress(tokenizer, width: int, rows: int, stop: Callable[[str], bool] | None,
                  eos_ids: set[int]):
    """A ``StoppingCriteria`` for a padded batch: it ends each row on its own (EOS, or ``stop`` on
    its decoded continuation) and records after how many new tokens (``ended_at``, ``None`` for a
    row still going) and when the first new token came (``first_token_at``)."""
    import torch
    from transformers import StoppingCriteria

    class RowProgress(StoppingCriteria):
        def __init__(self):
            self.ended_at: list[int | None] = [None] * rows
            self.checked = [0] * rows  # new tokens of each row already checked
            self.first_token_at: float | None = None

        def __call__(self, input_ids, scores, **kwargs):
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            generated = input_ids.size(1) - width
            for row in range(rows):
                if self.ended_at[row] is not None:
                    continue
                new = input_ids[row, width:].tolist()
                # one token per call, except when several were accepted at once (prompt lookup):
                # then each length is checked, so the row ends where a token-by-token run would
                for length in range(self.checked[row] + 1, generated + 1):
                    if new[length - 1] in eos_ids or (stop is not None and stop(
                            tokenizer.decode(new[:length], skip_special_tokens=True))):
                        self.ended_at[row] = length
                        break
                self.checked[row] = generated
            return torch.tensor([ended is not None for ended in self.ended_at],
                                device=input_ids.device)

    return RowProgress()


def _eos_ids(model, tokenizer) -> set[int]:
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else ({eos} if eos is not None else set())


MIN_SHARED_PREFIX = 16  # tokens: a shorter common beginning of the prompts is not run separately


def _common_prefix(sequences: list[list[int]]) -> int:
    """How many leading tokens all ``sequences`` share."""
    first, shortest = sequences[0], min(len(s) for s in sequences)
    for position in range(shortest):
        if any(s[position] != first[position] for s in sequences[1:]):
            return position
    return shortest


def length_batches(lengths: list[int], batch_size: int,
                   batch_tokens: int | None = None) -> list[list[int]]:
    """Indices of sequences grouped longest first (so little padding is needed): at most
    ``batch_size`` per group and, with ``batch_tokens``, at most that many tokens once padded to
    the group's longest (a sequence longer than that runs alone)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        group = batches[-1] if batches else None
        if group and len(group) < batch_size and (
                batch_tokens is None or lengths[group[0]] * (len(group) + 1) <= batch_tokens):
            group.append(index)
        else:
            batches.append([index])
    return batches


CACHE_SPARE_TOKENS = 64  # room a growing cache keeps ahead of its tokens


@lru_cache(maxsize=1)
def _growing_layer_class():
    """The cache layer of :func:`growing_cache` (defined once, on first use: transformers is
    imported only then)."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A ``DynamicLayer`` whose keys and values are the front of a buffer with spare room."""

        buffers: tuple | None = None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            old, new = self.get_seq_length(), key_states.shape[-2]
            buffers = self.buffers
            # the layer's tensors may have been replaced (cropped, reordered, copied): then the
            # buffer is the layer's only while they are still its front
            fits = (buffers is not None and old > 0
                    and self.keys.data_ptr() == buffers[0].data_ptr()
                    and self.values.data_ptr() == buffers[1].data_ptr()
                    and buffers[0].shape[:2] == key_states.shape[:2]
                    and old + new <= buffers[0].shape[-2])
            if not fits:
                batch, heads, _, width = key_states.shape
                buffers = tuple(
                    states.new_empty(batch, heads, old + new + CACHE_SPARE_TOKENS, width)
                    for states in (key_states, value_states))
                if old:
                    buffers[0][..., :old, :] = self.keys
                    buffers[1][..., :old, :] = self.values
                self.buffers = buffers
            buffers[0][..., old:old + new, :] = key_states
            buffers[1][..., old:old + new, :] = value_states
            self.keys, self.values = buffers[0][..., :old + new, :], buffers[1][..., :old + new, :]
            return self.keys, self.values

    return GrowingLayer


def growing_cache(model):
    """An empty key-value cache for ``model`` that appends a generated token in place.

    transformers' ``DynamicCache`` appends with ``torch.cat``, copying every cached key and value
    of every layer at each new token: on a CPU, about a sixth of a decoding step for a batch of
    RAG prompts. Here each layer keeps its keys and values at the front of a buffer with
    :data:`CACHE_SPARE_TOKENS` free positions after them, and a new token is written into it; the
    buffer is copied only when full. The model sees the same tensors (views of the buffer), so
    the outputs are the same. A model with other kinds of layers (e.g. sliding windows) gets a
    plain ``DynamicCache``.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config)
    if all(type(layer) is DynamicLayer for layer in cache.layers):
        layer = _growing_layer_class()
        cache.layers = [layer() for _ in cache.layers]
    return cache


def prefill_alone(model, rows: list[list[int]], *, prefix_cache=None, prefix_length: int = 0,
                  on_row: Callable[[int, Any], None] | None = None):
    """Run each of ``rows`` (token ids) through ``model`` on its own, then stack their keys and
    values into one batch cache, left-padded: each row's at the end of the longest row's width,
    zeros before it (the batch's attention mask hides them; positions count from each row's first
    token, as they do alone). Returns that cache.

    A padded batch reads prompts of a few hundred tokens more slowly on a CPU than the same
    prompts one by one; generating afterwards gains from the batch. ``prefix_cache`` holds the keys and values of the first
    ``prefix_length`` tokens, which every row starts with: they are run once, not per row.
    ``on_row(position, cache)`` is called with each non-empty row's own cache before the rows are
    stacked (the callee may extend a copy of it, not the cache itself).
    """
    import copy

    import torch
    import torch.nn.functional as F
    from transformers import DynamicCache

    device = next(model.parameters()).device
    width = max(len(row) for row in rows)
    layers: list[list[tuple]] = []  # per row: (keys, values) of every layer
    for row in rows:
        cache = copy.deepcopy(prefix_cache) if prefix_cache is not None else DynamicCache(config=model.config)
        rest = row[prefix_length:]
        if rest:
            cache = model(torch.tensor([rest], device=device), cache=cache, use_cache=True,
                          logits_to_keep=1).cache
        layers.append([(keys, values) for keys, values, *_ in cache] if len(row) else [])
        if on_row is not None and len(row):
            on_row(len(layers) - 1, cache)
    shape = next(row for row in layers if row)  # some row has tokens
    stacked = growing_cache(model)
    for index in range(len(shape)):
        sample_keys = shape[index][0]
        keys, values = [], []
        for row, states in zip(rows, layers):
            if states:
                row_keys, row_values = states[index]
            else:  # an empty row: nothing but padding
                row_keys = row_values = sample_keys.new_zeros(sample_keys[..., :0, :].shape)
            padding = (0, 0, width - len(row), 0)  # before the row's positions
            keys.append(F.pad(row_keys, padding))
            values.append(F.pad(row_values, padding))
        stacked.update(torch.cat(keys), torch.cat(values), index)
    return stacked


def generate_greedy(model, tokenizer, prompts: str | Iterable[str], *, max_new_tokens: int,
                    stop: Callable[[str], bool] | None = None, add_special_tokens: bool = True,
                    batch_size: int = 1, batch_tokens: int | None = None,
                    prompt_lookup: int | None = None, share_prefix: bool = True,
                    on_prefill: Callable[[int, list[int], Any], None] | None = None
                    ) -> list[Generation]:
    """Greedy continuations of ``prompts``, ``batch_size`` prompts per padded batch.

    Prompts are grouped by token length (:func:`length_batches`: longest first, so little padding
    is needed; with ``batch_tokens``, at most that many prompt tokens per batch once padded, so
    short prompts share larger batches than long ones), padded on the left with an attention
    mask, and returned in their given order. Each prompt is read alone
    and the batch then generates together (:func:`prefill_alone`). Each row ends on its own:
    at EOS, at ``max_new_tokens``, or once ``stop`` holds for its decoded continuation; a row that
    ended gets padding the model ignores, and the tokens after its end are dropped. The text is
    what :func:`generate` gives for the prompt alone (up to floating-point differences of padded
    batches: greedy choices between near-equal tokens can differ).

    With ``share_prefix``, a beginning all the prompts share (at least
    :data:`MIN_SHARED_PREFIX` tokens, e.g. a fixed system prompt) is run once; its keys and
    values are reused by every prompt. ``prompt_lookup`` (one
    prompt per batch only; no shared prefix then) proposes up to that many tokens copied from the
    prompt where its last words occur there (prompt lookup decoding) and checks them in one
    forward pass: the greedy choice is kept, so only the speed changes.

    ``on_prefill(index, ids, cache)`` is called once per prompt of more than one token, with its
    index, its token ids and the keys and values of all its tokens but the last, before its batch
    generates: whatever else needs the prompt read (e.g. scoring answer options after it) can
    reuse that reading. Its time is not counted in ``prefill_ms``.
    """
    import torch
    from transformers import StoppingCriteriaList

    if prompt_lookup and (batch_size != 1 or on_prefill is not None):
        raise ValueError("prompt_lookup works one prompt at a time, without on_prefill: "
                         "use batch_size=1.")
    options: dict[str, Any] = {"prompt_lookup_num_tokens": prompt_lookup} if prompt_lookup else {}
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        return []
    encoded = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    batches = length_batches([len(e) for e in encoded], batch_size, batch_tokens)
    pad, eos_ids = pad_token_id(tokenizer), _eos_ids(model, tokenizer)
    device = next(model.parameters()).device
    shared = 0
    if share_prefix and not prompt_lookup and len(prompts) > 1:
        # every row keeps at least one token of its own to run
        shared = min(_common_prefix(encoded), min(len(e) for e in encoded) - 1)
        shared = shared if shared >= MIN_SHARED_PREFIX else 0
    results: list[Generation | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            prefix_cache, prefix_ms = None, 0.0
            if shared:
                start = time.perf_counter()
                prefix_cache = model(torch.tensor([encoded[0][:shared]], device=device),
                                     use_cache=True).cache
                prefix_ms = (time.perf_counter() - start) * 1000
            for rows in batches:
                width = max(len(encoded[i]) for i in rows)
                ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in rows],
                                   device=device)
                mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i])
                                     for i in rows], device=device)
                start = time.perf_counter()
                options.pop("cache", None)
                hook_seconds = 0.0
                if (len(rows) > 1 or prefix_cache is not None or on_prefill) and width > 1:

                    def on_row(position, cache, rows=rows):
                        nonlocal hook_seconds
                        begun = time.perf_counter()
                        on_prefill(rows[position], encoded[rows[position]], cache)
                        hook_seconds += time.perf_counter() - begun

                    # each prompt but its last token read alone, the batch then generates together
                    options["cache"] = prefill_alone(model, [encoded[i][:-1] for i in rows],
                                                    prefix_cache=prefix_cache,
                                                    prefix_length=shared,
                                                    on_row=on_row if on_prefill else None)
                else:
                    options["cache"] = growing_cache(model)
                progress = _row_progress(tokenizer, width, len(rows), stop, eos_ids)
                output = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                        max_new_tokens=max_new_tokens, pad_token_id=pad,
                                        stopping_criteria=StoppingCriteriaList([progress]),
                                        **options)
                end = time.perf_counter()
                first = progress.first_token_at or end
                # the shared prefix ran once for all prompts: each batch is charged its share
                prefill_ms = ((first - start - hook_seconds) * 1000
                              + prefix_ms * len(rows) / len(prompts))
                for row, index in enumerate(rows):
                    kept = progress.ended_at[row] or output.size(1) - width
                    new = output[row, width:width + kept]
                    results[index] = Generation(
                        tokenizer.decode(new, skip_special_tokens=True), int(new.numel()),
                        prefill_ms, (end - first) * 1000, len(rows))
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def generate(model, tokenizer, prompts: str | Iterable[str], *, max_new_tokens: int,
             do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, seed: int | None = None, add_special_tokens: bool = True,
             stop: Callable[[str], bool] | None = None, batch_size: int = 1) -> list[str]:
    """The continuation (prompt excluded) of each prompt; greedy unless ``do_sample``.

    ``stop`` ends generation early once it returns True for the text generated so far (e.g.
    "the first sentence is complete"). ``add_special_tokens=False`` for prompts that already hold
    them (a chat template's output). Up to ``batch_size`` prompts run per padded batch
    (:func:`generate_greedy` when greedy). When sampling with ``seed``, the generator is re-seeded
    before each batch, so a sample depends on its batch only: with ``batch_size=1`` on its prompt
    alone, with one batch for all prompts on the seed and the prompts.
    """
    import torch
    from transformers import StoppingCriteriaList

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not do_sample:
        return [g.text for g in generate_greedy(model, tokenizer, prompts,
                                                max_new_tokens=max_new_tokens, stop=stop,
                                                add_special_tokens=add_special_tokens,
                                                batch_size=batch_size)]
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        return []
    pad = pad_token_id(tokenizer)
    options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": True,
                               "pad_token_id": pad}
    sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
    options.update({key: value for key, value in sampling.items() if value is not None})
    encoded = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    device = next(model.parameters()).device
    eos_ids = _eos_ids(model, tokenizer)
    continuations: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            # in the given order, so that a prompt's batch (and its sample) does not depend on
            # the other prompts' lengths
            for begin in range(0, len(prompts), batch_size):
                rows = list(range(begin, min(begin + batch_size, len(prompts))))
                width = max(len(encoded[i]) for i in rows)
                ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in rows],
                                   device=device)
                mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i])
                                     for i in rows], device=device)
                if seed is not None:
                    torch.manual_seed(seed)
                progress = _row_progress(tokenizer, width, len(rows), stop, eos_ids)
                output = model.generate(input_ids=ids, attention_mask=mask,
                                        stopping_criteria=StoppingCriteriaList([progress]),
                                        **options)
                for row, index in enumerate(rows):
                    kept = progress.ended_at[row] or output.size(1) - width
                    continuations[index] = tokenizer.decode(output[row, width:width + kept],
                                                            skip_special_tokens=True)
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


def joined_text(texts_or_dataset) -> str:
    """A text, a list of texts or a dataset's ``text`` column as one text (blank lines between)."""
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
    input_ids = tokenizer(joined_text(texts_or_dataset), return_tensors="pt", verbose=False).input_ids
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


