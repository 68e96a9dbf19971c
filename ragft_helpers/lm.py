"""Language-model basics for notebook 01: tokens, next-token probabilities, decoding strategies."""
from __future__ import annotations

from dataclasses import dataclass

from ragft_helpers.finetune import generate


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


def plot_next_token_distribution(distribution, ax=None, title: str | None = None):
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    labels = [repr(t) for t in distribution["token"]]
    ax.barh(labels[::-1], distribution["probability"][::-1])
    ax.set_xlabel("probability of being the next token")
    if title:
        ax.set_title(title)
    return ax


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


def sampling_widget(model, tokenizer, prompt: str, *, max_new_tokens: int):
    """Sliders for temperature, top-k and top-p wired to :func:`decode_with`."""
    import ipywidgets as widgets

    text = widgets.Text(value=prompt, description="prompt", layout=widgets.Layout(width="90%"))
    strategy = widgets.ToggleButtons(options=["greedy", "sampling"], value="sampling")
    temperature = widgets.FloatSlider(value=0.8, min=0.1, max=2.0, step=0.1, description="temperature")
    top_k = widgets.IntSlider(value=50, min=0, max=200, description="top-k (0=off)")
    top_p = widgets.FloatSlider(value=0.95, min=0.1, max=1.0, step=0.05, description="top-p")
    seed = widgets.IntText(value=0, description="seed")
    button = widgets.Button(description="Generate", button_style="primary")
    output = widgets.Output()

    def on_click(_):
        choice = DecodingChoice(strategy.value, temperature.value, top_k.value, top_p.value, seed.value)
        continuation = decode_with(model, tokenizer, text.value, choice, max_new_tokens=max_new_tokens)
        output.clear_output()
        with output:
            print(text.value + continuation)

    button.on_click(on_click)
    return widgets.VBox([text, strategy, temperature, top_k, top_p, seed, button, output])
