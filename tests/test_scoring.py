import pytest

from ragft_helpers import scoring, harness
from ragft_helpers.qa import Question


def _q(answer="£14.50", aliases=("14.50",), type_="numeric"):
    return Question("q", "How much?", answer, aliases, ("£1", "£2", "£3"), (("a.md", "A"),),
                    type_, ("It costs £14.50.",))


@pytest.mark.parametrize("text, expected", [
    ("An adult single costs £14.50.", True),
    ("It is 14.50 pounds", True),
    ("It costs £114.50.", False),
    ("£14.5", False),
    ("I don't know.", False),
])
def test_containment_is_normalised_and_whole_word(text, expected):
    assert scoring.contains_answer(text, _q()) is expected


def test_times_and_case_are_normalised():
    q = _q(answer="07:45", aliases=())
    assert scoring.contains_answer("The first sailing leaves at 07:45.", q)
    assert not scoring.contains_answer("The first sailing leaves at 17:45.", q)
    assert scoring.contains_answer("the KITTIWAKE star", _q(answer="Kittiwake Star", aliases=()))


@pytest.mark.parametrize("text", ["I don't know.", "I do not know the answer.",
                                  "The context does not say.", "That is not mentioned.",
                                  "I don’t know — the knowledge base has nothing on that."])
def test_abstentions_are_detected(text):
    assert scoring.is_abstention(text.replace("’", "'"))


@pytest.mark.parametrize("text", ["The fare is £14.50.", "You know the ferry leaves at 9."])
def test_answers_are_not_abstentions(text):
    assert not scoring.is_abstention(text)


def test_score_answers_counts_abstention_as_right_only_when_unanswerable():
    answerable, unanswerable = _q(), _q(answer=None, aliases=(), type_="unanswerable")
    table = harness.score_answers([answerable, unanswerable], lambda question: "I don't know.")
    assert list(table["correct"]) == [False, True]
    assert list(table["abstained"]) == [True, True]
    assert (table["seconds"] >= 0).all()


def test_distinct_n_is_the_share_of_different_n_grams():
    assert scoring.distinct_n(["the boat the boat"], 2) == pytest.approx(2 / 3)  # "the boat" twice, "boat the"
    assert scoring.distinct_n(["The boat.", "the BOAT"], 2) == 0.5  # normalised words
    assert scoring.distinct_n(["one", "two"], 2) != scoring.distinct_n(["one", "two"], 2)  # no bigram: NaN
    assert scoring.distinct_n(["a b c", "d e f"], 1) == 1.0
