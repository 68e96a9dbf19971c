import pandas as pd
import pytest

from ragft_helpers import qa, retrieval_metrics


def _question(**overrides):
    values = dict(id="q1", question="How much is a dog?", answer="£4", aliases=(),
                  distractors=("£1", "£2", "£3"), sources=(("pets.md", "Dogs"),), type="single-hop",
                  paraphrases=("Dogs cost £4.",))
    return qa.Question(**{**values, **overrides})


def test_loads_every_question_of_the_set():
    questions = qa.load_questions()
    assert len(questions) >= 150
    assert {q.type for q in questions} == set(qa.TYPES)
    assert all(q.answer is None for q in questions if not q.answerable)


def test_limited_sample_is_seeded_and_covers_every_type():
    first = qa.load_questions(limit=10, seed=1)
    assert [q.id for q in first] == [q.id for q in qa.load_questions(limit=10, seed=1)]
    assert {q.type for q in first} == set(qa.TYPES)
    assert [q.id for q in first] != [q.id for q in qa.load_questions(limit=10, seed=2)]


def test_unknown_type_is_an_error():
    with pytest.raises(ValueError, match="unknown question types"):
        qa.load_questions(types=["trivia"])


def test_relevance_follows_section_and_subsections():
    q = _question()
    assert retrieval_metrics.is_relevant({"source": "pets.md", "heading_path": "Pets > Dogs > Muzzles"}, q)
    assert not retrieval_metrics.is_relevant({"source": "pets.md", "heading_path": "Pets > Cats"}, q)
    assert not retrieval_metrics.is_relevant({"source": "fares.md", "heading_path": "Fares > Dogs"}, q)
    metadatas = [{"source": "x.md", "heading_path": "X"}, {"source": "pets.md", "heading_path": "Pets > Dogs"}]
    assert retrieval_metrics.first_relevant_rank(metadatas, q) == 2
    assert retrieval_metrics.first_relevant_rank(metadatas[:1], q) is None


def test_quality_table_matches_hand_computation():
    ranks = pd.DataFrame({"id": ["a", "b", "c", "d"], "type": ["numeric"] * 2 + ["multi-hop"] * 2,
                          "rank": [1, 3, None, 2]})
    table = retrieval_metrics.retrieval_quality(ranks, ks=(1, 3))
    assert table.loc["numeric", "hit@1"] == 0.5 and table.loc["numeric", "hit@3"] == 1.0
    assert table.loc["multi-hop", "MRR"] == pytest.approx(0.25)
    assert table.loc["all", "MRR"] == pytest.approx((1 + 1 / 3 + 0 + 1 / 2) / 4)


def test_open_prompts_are_distinct_requests_with_ids_and_a_limit():
    import json

    from ragft_helpers.config import OPEN_PROMPTS_FILE

    records = [json.loads(line) for line in OPEN_PROMPTS_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(records) >= 10 and len({r["id"] for r in records}) == len(records)
    prompts = qa.load_open_prompts()
    assert prompts == [r["prompt"] for r in records] and len(set(prompts)) == len(prompts)
    assert qa.load_open_prompts(limit=3) == prompts[:3]
