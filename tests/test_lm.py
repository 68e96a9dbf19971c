import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from ragft_helpers import lm
from ragft_helpers.lm import DecodingChoice, decode_with, next_token_distribution, token_table
from tests.tiny_models import TINY_TEXT, one_torch_thread, tiny_gpt2, tiny_llama, tiny_tokenizer  # noqa: F401


@pytest.fixture(scope="module")
def tiny():
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    return GPT2LMHeadModel(config).eval(), tokenizer


def test_token_table_covers_the_text_in_order(tiny):
    _, tokenizer = tiny
    table = token_table(tokenizer, "the ferry leaves the harbour")
    assert list(table["position"]) == list(range(len(table)))
    assert " ".join(table["covers"]).split() == "the ferry leaves the harbour".split()
    assert list(table["id"]) == tokenizer("the ferry leaves the harbour", add_special_tokens=False)["input_ids"]


def test_next_token_distribution_is_sorted_probabilities(tiny):
    model, tokenizer = tiny
    dist = next_token_distribution(model, tokenizer, "the ferry", top_n=5)
    assert len(dist) == 5
    assert list(dist["probability"]) == sorted(dist["probability"], reverse=True)
    assert 0 < dist["probability"].sum() <= 1 + 1e-6


def test_temperature_sharpens_and_flattens(tiny):
    model, tokenizer = tiny
    cold = next_token_distribution(model, tokenizer, "the ferry", top_n=1, temperature=0.2)
    hot = next_token_distribution(model, tokenizer, "the ferry", top_n=1, temperature=5.0)
    assert cold["probability"][0] > hot["probability"][0]
    with pytest.raises(ValueError, match="temperature"):
        next_token_distribution(model, tokenizer, "the ferry", temperature=0)


def test_greedy_is_deterministic_and_sampling_follows_the_seed(tiny):
    model, tokenizer = tiny
    greedy = DecodingChoice("greedy")
    assert decode_with(model, tokenizer, "the", greedy, max_new_tokens=6) == \
        decode_with(model, tokenizer, "the", greedy, max_new_tokens=6)
    hot = DecodingChoice("sampling", temperature=3.0, seed=1)
    samples = {decode_with(model, tokenizer, "the", DecodingChoice("sampling", 3.0, seed=s),
                           max_new_tokens=8) for s in range(4)}
    assert decode_with(model, tokenizer, "the", hot, max_new_tokens=8) == \
        decode_with(model, tokenizer, "the", hot, max_new_tokens=8)
    assert len(samples) > 1
    with pytest.raises(ValueError, match="greedy"):
        decode_with(model, tokenizer, "the", DecodingChoice("beam"), max_new_tokens=2)


# ---- batched greedy generation --------------------------------------------------------------------

WORDS = TINY_TEXT.split()
# prompts of 1 to 20 tokens, so the batches are padded
PROMPTS = [" ".join(WORDS[start:start + n]) for start, n in
           [(0, 1), (2, 5), (4, 12), (0, 20), (7, 3), (1, 9), (3, 2), (10, 15)]]
HEAD = " ".join(WORDS[:18]) + " "  # a beginning longer than lm.MIN_SHARED_PREFIX tokens


def _ends_at_punctuation(text: str) -> bool:
    return bool({".", ","} & set(text.split()))


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lively(request):
    """fp32 tiny models with large random weights: their greedy continuations vary and end
    (at "." or ",") after different numbers of tokens."""
    tokenizer = tiny_tokenizer()
    make = tiny_gpt2 if request.param == "gpt2" else tiny_llama
    return make(tokenizer, seed=2, initializer_range=0.5).eval(), tokenizer


@pytest.mark.parametrize("head", ["", HEAD], ids=["different", "shared-beginning"])
def test_batched_greedy_answers_equal_unbatched(lively, head):
    model, tokenizer = lively
    prompts = [head + p for p in PROMPTS]
    alone = [lm.generate_greedy(model, tokenizer, p, max_new_tokens=10, stop=_ends_at_punctuation)[0]
             for p in prompts]
    batched = lm.generate_greedy(model, tokenizer, prompts, max_new_tokens=10,
                                 stop=_ends_at_punctuation, batch_size=3)
    assert [g.text for g in batched] == [g.text for g in alone]
    assert [g.new_tokens for g in batched] == [g.new_tokens for g in alone]
    # the rows really ended at different steps, by the stop rule and by the token budget
    assert len({g.new_tokens for g in alone}) > 2 and any(g.new_tokens == 10 for g in alone)
    assert any(_ends_at_punctuation(g.text) for g in alone)
    assert sorted(g.batch_rows for g in batched) == [2, 2, 3, 3, 3, 3, 3, 3]  # 8 prompts in 3s
    assert all(g.prefill_ms > 0 and g.decode_ms >= 0 for g in batched)
    assert lm.generate(model, tokenizer, prompts, max_new_tokens=10, stop=_ends_at_punctuation,
                       batch_size=4) == [g.text for g in alone]


def test_greedy_answers_equal_transformers_generate_with_its_own_cache(lively):
    """The in-place cache changes no token: generate_greedy gives what model.generate gives
    with transformers' DynamicCache, alone and in padded batches."""
    model, tokenizer = lively
    for prompt in PROMPTS[:4]:
        ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        reference = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                   do_sample=False, max_new_tokens=10,
                                   pad_token_id=lm.pad_token_id(tokenizer))[0, ids.size(1):]
        for batch_size in (1, 4):
            mine = lm.generate_greedy(model, tokenizer, [prompt] + PROMPTS[4:7],
                                      max_new_tokens=10, batch_size=batch_size)[0]
            assert mine.text == tokenizer.decode(reference, skip_special_tokens=True)


def test_growing_cache_appends_in_place_and_matches_concatenation(tiny):
    from transformers import DynamicCache

    model, _ = tiny
    grown, plain = lm.growing_cache(model), DynamicCache(config=model.config)
    torch.manual_seed(0)
    steps = [torch.randn(2, 2, n, 16) for n in (5, 1, 1, 3, 1)]
    pointers = []
    for states in steps:
        keys, values = grown.update(states, -states, 0)
        plain.update(states, -states, 0)
        pointers.append(keys.data_ptr())
        assert torch.equal(keys, plain.layers[0].keys) and torch.equal(values, -keys)
    assert len(set(pointers)) == 1  # written into one buffer, never copied to a new one
    copied = copy.deepcopy(grown)
    grown.crop(-2)
    plain.crop(-2)
    keys, _ = grown.update(steps[1], steps[1], 0)
    assert torch.equal(keys, plain.update(steps[1], steps[1], 0)[0])
    assert copied.get_seq_length() == 11  # the copy kept its own tokens
    assert torch.equal(copied.layers[0].keys[..., 5:6, :], steps[1])
    many = torch.randn(2, 2, lm.CACHE_SPARE_TOKENS + 1, 16)  # more than the room left: a new buffer
    assert torch.equal(grown.update(many, many, 0)[0][..., -many.size(-2):, :], many)


def test_length_batches_group_by_padded_tokens():
    lengths = [50, 400, 60, 390, 55, 380]
    assert lm.length_batches(lengths, 8) == [[1, 3, 5, 2, 4, 0]]  # longest first
    # at most 780 padded tokens: long prompts one or two at a time, the short ones all together
    assert lm.length_batches(lengths, 8, 780) == [[1], [3, 5], [2, 4, 0]]
    assert lm.length_batches(lengths, 2, 10_000) == [[1, 3], [5, 2], [4, 0]]
    assert lm.length_batches([900, 10], 4, 800) == [[0], [1]]  # too long for a batch: alone
    with pytest.raises(ValueError, match="batch_size"):
        lm.length_batches(lengths, 0)


def test_prefill_hook_sees_each_prompt_read_once_and_changes_no_answer(lively):
    model, tokenizer = lively
    prompts = [HEAD + p for p in PROMPTS]
    plain = lm.generate_greedy(model, tokenizer, prompts, max_new_tokens=10,
                               stop=_ends_at_punctuation, batch_size=3)
    seen = {}

    def hook(index, ids, cache):
        seen[index] = (ids, cache.get_seq_length())
        cache.batch_repeat_interleave(2)  # a careless hook must not change the batch's cache

    hooked = lm.generate_greedy(model, tokenizer, prompts, max_new_tokens=10,
                                stop=_ends_at_punctuation, batch_size=3, on_prefill=hook)
    assert [g.text for g in hooked] == [g.text for g in plain]
    assert sorted(seen) == list(range(len(prompts)))
    for index, prompt in enumerate(prompts):
        ids = tokenizer(prompt)["input_ids"]
        assert seen[index] == (ids, len(ids) - 1)  # every token but the last, which generates


def test_prompt_lookup_keeps_the_greedy_answer(lively):
    model, tokenizer = lively
    prompts = [p + " " + p for p in PROMPTS]  # repeats, so lookup finds candidates to copy
    for prompt in prompts:
        plain = lm.generate_greedy(model, tokenizer, prompt, max_new_tokens=10,
                                   stop=_ends_at_punctuation)[0]
        lookup = lm.generate_greedy(model, tokenizer, prompt, max_new_tokens=10,
                                    stop=_ends_at_punctuation, prompt_lookup=4)[0]
        assert (lookup.text, lookup.new_tokens) == (plain.text, plain.new_tokens)


def test_sampled_batches_follow_the_seed_and_end_each_row_on_its_own(lively):
    model, tokenizer = lively
    prompts = PROMPTS[:5]
    options = dict(max_new_tokens=10, do_sample=True, temperature=2.0, stop=_ends_at_punctuation)
    batched = lm.generate(model, tokenizer, prompts, seed=7, batch_size=5, **options)
    assert batched == lm.generate(model, tokenizer, prompts, seed=7, batch_size=5, **options)
    assert batched != lm.generate(model, tokenizer, prompts, seed=8, batch_size=5, **options)
    # nothing after a row's end: each row stops at its own first punctuation mark
    for text in batched:
        words = text.split()
        assert not any(_ends_at_punctuation(" ".join(words[:n])) for n in range(1, len(words)))
    # in batches of one, each prompt's sample is its own: the same whatever comes before it
    alone = lm.generate(model, tokenizer, prompts, seed=7, **options)
    assert alone[1:] == lm.generate(model, tokenizer, prompts[1:], seed=7, **options)


def test_batches_refuse_prompt_lookup_and_a_batch_of_nothing(tiny):
    model, tokenizer = tiny
    for do_sample in (False, True):
        with pytest.raises(ValueError, match="batch_size must be >= 1"):
            lm.generate(model, tokenizer, ["the", "a"], max_new_tokens=2, do_sample=do_sample,
                        batch_size=0)
    with pytest.raises(ValueError, match="one prompt at a time"):
        lm.generate_greedy(model, tokenizer, ["the", "a"], max_new_tokens=2, batch_size=2,
                           prompt_lookup=3)
