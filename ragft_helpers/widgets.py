"""Every ipywidget of the workbook and its HTML. Handlers stay plain, tested functions
(:func:`ragft_helpers.chat.chat_turn`, :func:`ragft_helpers.lm.decode_with`,
:func:`ragft_helpers.harness.side_by_side`); the widgets only wire them to controls."""
from __future__ import annotations

import html
from typing import Any, Sequence

from ragft_helpers.chat import ChatState, chat_turn
from ragft_helpers.config import Settings, get_settings
from ragft_helpers.harness import System, side_by_side
from ragft_helpers.lm import DecodingChoice, decode_with
from ragft_helpers.qa import Question
from ragft_helpers.rag import DEFAULT_THRESHOLD


# ---- notebook 01: decoding -----------------------------------------------------------------------

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


# ---- notebook 04: chat ---------------------------------------------------------------------------

def _rows_html(rows: list[dict]) -> str:
    if not rows:
        return "<i>no sources</i>"
    cells = "".join(f"<tr><td>{r['rank']}</td><td>{html.escape(r['source'])}</td>"
                    f"<td>{html.escape(r['section'])}</td><td>{r['score']:.3f}</td></tr>"
                    for r in rows)
    return ("<table><tr><th>#</th><th>source</th><th>section</th><th>score</th></tr>"
            f"{cells}</table>")


def _transcript_html(history: Sequence[tuple[str, str]]) -> str:
    return "".join(f"<p><b>You:</b> {html.escape(q)}<br><b>Bot:</b> {html.escape(a)}</p>"
                   for q, a in history)


def chat_widget(*, model, tokenizer, collection, k: int | None = None,
                threshold: float = DEFAULT_THRESHOLD,
                max_new_tokens: int | None = None, settings: Settings | None = None,
                readers: dict[str, tuple[Any, Any]] | None = None):
    """A chat box (question, Send, k slider, transcript, sources with scores) over :func:`chat_turn`.

    ``readers`` maps more reader names to ``(model, tokenizer)`` (e.g. the RAFT reader of notebook
    06); with any, a selector picks which model reads the retrieved context ("base" is ``model``).
    """
    import ipywidgets as widgets

    choices = {"base": (model, tokenizer), **(readers or {})}
    reader = widgets.Dropdown(options=list(choices), value="base", description="Reader",
                              layout=widgets.Layout(display="" if len(choices) > 1 else "none"))
    question = widgets.Text(description="Question", layout=widgets.Layout(width="70%"))
    send = widgets.Button(description="Send", button_style="primary")
    k = (settings or get_settings()).profile.rag_k if k is None else k
    k_slider = widgets.IntSlider(value=k, min=0, max=10, description="k")
    transcript = widgets.HTML()
    sources = widgets.HTML()
    status = widgets.HTML()
    state: dict[str, Any] = {"chat": ChatState()}

    def on_send(_):
        chosen_model, chosen_tokenizer = choices[reader.value]
        state["chat"], view = chat_turn(state["chat"], question.value, k=k_slider.value,
                                        model=chosen_model, tokenizer=chosen_tokenizer,
                                        collection=collection,
                                        threshold=threshold, max_new_tokens=max_new_tokens,
                                        settings=settings)
        if view.error:
            status.value = f"<span style='color:#b00'>{html.escape(view.error)}</span>"
            return
        question.value = ""
        transcript.value = _transcript_html(state["chat"].history)
        sources.value = _rows_html(view.sources)
        status.value = view.timing() + (" — abstained" if view.abstained else "")

    send.on_click(on_send)
    return widgets.VBox([widgets.HBox([question, send]), widgets.HBox([k_slider, reader]),
                         transcript, widgets.HTML("<b>Sources</b>"), sources, status])


# ---- the showdown: side by side ------------------------------------------------------------------

def side_by_side_html(rows: Sequence[dict]) -> str:
    mark = {True: "✅", False: "❌", None: "–"}
    cells = "".join(
        f"<tr><td><b>{html.escape(r['system'])}</b></td>"
        f"<td>{html.escape(r['error'] or r['answer'])}</td>"
        f"<td>{'<br>'.join(f'{html.escape(label)} ({score})' for label, score in r['sources'])}</td>"
        f"<td>{r['ms']}</td><td>{mark[r['right']]}</td></tr>" for r in rows)
    return ("<table><tr><th>system</th><th>answer</th><th>sources (score)</th><th>ms</th>"
            f"<th>right</th></tr>{cells}</table>")


def side_by_side_widget(systems: Sequence[System], questions: Sequence[Question], settings):
    """Pick or type a question, choose systems, compare their answers (:func:`side_by_side`)."""
    import ipywidgets as widgets

    by_name = {s.name: s for s in systems}
    question = widgets.Combobox(options=[q.question for q in questions],
                                description="Question", layout=widgets.Layout(width="80%"))
    chosen = widgets.SelectMultiple(options=list(by_name), value=tuple(by_name), description="Systems")
    ask = widgets.Button(description="Ask", button_style="primary")
    output = widgets.HTML()

    def on_ask(_):
        output.value = "…"
        rows = side_by_side(question.value, [by_name[n] for n in chosen.value], settings,
                            questions=questions)
        output.value = side_by_side_html(rows)

    ask.on_click(on_ask)
    return widgets.VBox([question, chosen, ask, output])
