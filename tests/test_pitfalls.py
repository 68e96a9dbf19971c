import torch
from transformers import GPT2Config, GPT2LMHeadModel

from ragft_helpers import pitfalls
from tests.tiny_models import tiny_tokenizer


def _tiny():
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=16,
                                       n_layer=2, n_head=2))
    return model, tokenizer


def test_old_argument_name_is_rejected(tmp_path):
    result = pitfalls.renamed_evaluation_strategy(tmp_path)
    assert result.fails and "evaluation_strategy" in result.outcome


def test_padding_needs_a_pad_token_and_the_original_is_untouched():
    _, tokenizer = _tiny()
    result = pitfalls.padding_without_pad_token(tokenizer)
    assert result.fails and "pad" in result.outcome.lower()
    assert tokenizer.pad_token == "<eos>"


def test_missing_labels_means_no_loss(tmp_path):
    model, tokenizer = _tiny()
    result = pitfalls.missing_labels(model, tokenizer, tmp_path)
    assert result.fails and "loss" in result.outcome


def test_padding_waste_is_measured():
    _, tokenizer = _tiny()
    assert pitfalls.padding_waste(tokenizer, ["the ferry", "the island has a school"], 10) == \
        1 - (2 + 5) / 20
    row = pitfalls.padded_lines_pitfall(tokenizer, ["the ferry", " ", "", "a ticket"], 8)
    assert "50% of the lines are blank" in row.outcome


def test_table_has_every_pitfall(tmp_path):
    model, tokenizer = _tiny()
    table = pitfalls.snippet_pitfalls(model, tokenizer, ["the ferry leaves"], tmp_path,
                                      max_length=16, hub_reachable=False, hub_reason="offline")
    assert list(table.columns) == ["snippet", "outcome", "fix", "fails"]
    assert table["fails"].sum() == 4
