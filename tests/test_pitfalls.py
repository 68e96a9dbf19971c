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


# ---- the RAG snippet -----------------------------------------------------------------------------

def test_rag_hub_lines_fail_at_once_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what ragft_helpers sets without a hub
    for row in (pitfalls.rag_tokenizer_download(False, "offline"),
                pitfalls.rag_retriever_download(False, "offline"),
                pitfalls.rag_model_download(False, "offline")):
        assert row.fails and row.outcome.startswith("OSError")
        assert float(row.outcome.split("after ")[1].split(" s")[0]) < 5


def test_rag_downloads_are_not_run_when_the_hub_answers():
    for row in (pitfalls.rag_retriever_download(True, "answered"),
                pitfalls.rag_model_download(True, "answered")):
        assert not row.fails and row.outcome.startswith("not run here")


def test_wiki_dpr_size_is_computed_from_the_config():
    size = pitfalls.wiki_dpr_size(pitfalls.tiny_rag_config())
    assert round(size["all vectors"], 1) == 64.6
    assert size["dummy vector file"] == size["all vectors"] / 50
    assert "64.6 GB" in pitfalls.wiki_dpr_download(pitfalls.tiny_rag_config()).outcome


def test_the_retriever_needs_faiss_and_a_loading_script(tmp_path):
    import importlib.util

    faiss = pitfalls.faiss_requirement(pitfalls.tiny_rag_config())
    assert faiss.fails == (importlib.util.find_spec("faiss") is None)
    script = pitfalls.wiki_dpr_loading_script(tmp_path)
    assert script.fails and "Dataset scripts are no longer supported" in script.outcome


def test_a_rag_token_checkpoint_loads_silently_as_rag_sequence_and_scores_differently(tmp_path):
    found = pitfalls.rag_class_mismatch(tmp_path)
    assert found["loaded as"] == "RagSequenceForGeneration"
    assert found["architectures"] == ["RagTokenForGeneration"]
    assert found["warnings while loading"] == 0
    assert abs(found["loss as RAG-Token"] - found["loss as RAG-Sequence"]) > 0.1


def test_rag_table_has_every_line(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    table = pitfalls.rag_snippet_pitfalls(tmp_path, hub_reachable=False, hub_reason="offline")
    assert list(table.columns) == ["snippet", "outcome", "fix", "fails"] and len(table) == 6
