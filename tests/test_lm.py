import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from ragft_helpers.lm import DecodingChoice, decode_with, next_token_distribution, token_table
from tests.tiny_models import tiny_tokenizer


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
