"""Tiny, offline stand-ins for exercising code paths: a word-level tokenizer built from text."""
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

TINY_TEXT = (
    "the ferry leaves the harbour at seven and returns at nine . "
    "the island has a lighthouse , a school and a small market . "
    "a ticket costs four pounds for adults and two pounds for children . "
)


def tiny_tokenizer(text: str = TINY_TEXT) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the words of ``text`` plus ``<unk>`` and ``<eos>``."""
    vocab = {"<unk>": 0, "<eos>": 1}
    for word in text.split():
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")


def tiny_gpt2(tokenizer, *, seed: int = 0, n_positions: int = 64, n_embd: int = 32, n_layer: int = 2,
              **config):
    """A randomly initialised GPT-2 sized to ``tokenizer``, seeded, with its EOS as BOS and EOS;
    ``config`` overrides other ``GPT2Config`` fields (e.g. ``resid_pdrop=0.0``)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd,
                        n_layer=n_layer, n_head=2, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, **config)
    return GPT2LMHeadModel(config)


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """Import into a test module to run its tests on one torch thread: tiny models gain nothing
    from a second one, and with a busy neighbour two threads spin-wait for each other."""
    import torch

    previous = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_training_settings(cache_dir):
    """Smoke settings sized for tiny models: batches of 8 blocks, 64 evaluation tokens, a large
    learning rate, the cache in ``cache_dir``."""
    from dataclasses import replace

    from ragft_helpers.config import PROFILES, get_settings

    base = get_settings({"RAGFT_PROFILE": "smoke", "RAGFT_CACHE_DIR": str(cache_dir)})
    profile = replace(PROFILES["smoke"], train_batch_size=8, eval_max_tokens=64, learning_rate=5e-3)
    return replace(base, profile=profile)


def tiny_llama(tokenizer, *, seed: int = 0, max_position_embeddings: int = 128, **config):
    """A randomly initialised Llama (rotary positions, grouped-query attention) sized to
    ``tokenizer``, seeded, with its EOS as BOS, EOS and padding; ``config`` overrides other
    ``LlamaConfig`` fields."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_position_embeddings, bos_token_id=eos,
                         eos_token_id=eos, pad_token_id=eos, **config)
    return LlamaForCausalLM(config)
