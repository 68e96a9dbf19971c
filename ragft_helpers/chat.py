"""A chat turn as a plain function: the state (history), what to show, and the handler the
chat widget calls (:mod:`ragft_helpers.widgets` only wires it to controls)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ragft_helpers.config import Settings
from ragft_helpers.rag import DEFAULT_THRESHOLD, answer
from ragft_helpers.retrieval import RetrievedChunk
from ragft_helpers.store import MissingIndexError, StoreError


@dataclass(frozen=True)
class ChatState:
    history: tuple[tuple[str, str], ...] = ()  # (question, answer) pairs, oldest first


@dataclass(frozen=True)
class ChatView:
    answer: str
    sources: list[dict]  # table rows: rank, source, section, score
    retrieval_ms: float = 0.0
    generation_ms: float = 0.0  # prompt building, prefill and decode
    abstained: bool = False
    error: str = ""
    prefill_ms: float = 0.0  # time to the first new token: reading the prompt
    decode_ms: float = 0.0  # the rest of the answer, token by token

    def timing(self) -> str:
        """Where the time went, e.g. "retrieval 25 ms, generation 1,980 ms (prefill 1,070 ms,
        decode 900 ms)"; without the split when the model was not called."""
        text = f"retrieval {self.retrieval_ms:,.0f} ms, generation {self.generation_ms:,.0f} ms"
        if self.prefill_ms or self.decode_ms:
            text += f" (prefill {self.prefill_ms:,.0f} ms, decode {self.decode_ms:,.0f} ms)"
        return text


def source_rows(chunks: Sequence[RetrievedChunk]) -> list[dict]:
    return [{"rank": n, "source": c.metadata.get("source", "?"),
             "section": c.metadata.get("heading_path", ""), "score": round(c.score, 3)}
            for n, c in enumerate(chunks, start=1)]


def chat_turn(state: ChatState, message: str, *, k: int | None = None, model, tokenizer, collection,
              threshold: float = DEFAULT_THRESHOLD, max_new_tokens: int | None = None,
              settings: Settings | None = None) -> tuple[ChatState, ChatView]:
    """One chat turn: answer ``message`` given the history in ``state``.

    Returns the new state (the turn appended) and what to show. An empty message or a missing
    index does not raise: the state is unchanged and the view carries the error.
    """
    try:
        reply = answer(message, model=model, tokenizer=tokenizer, collection=collection, k=k,
                       threshold=threshold, history=state.history, max_new_tokens=max_new_tokens,
                       settings=settings)
    except (ValueError, MissingIndexError, StoreError) as err:
        return state, ChatView(answer="", sources=[], error=str(err))
    new_state = ChatState(state.history + ((message.strip(), reply.text),))
    return new_state, ChatView(reply.text, source_rows(reply.sources), reply.retrieval_ms,
                               reply.generation_ms, reply.abstained,
                               prefill_ms=reply.prefill_ms, decode_ms=reply.decode_ms)
