"""Hybrid retrieval's fusion: normalised dense and BM25 scores in a convex combination."""
import pytest

import ragft_helpers  # noqa: F401  (sets the HF offline mode first)
from ragft_helpers import fusion, lexical, retrieval, store
from ragft_helpers.config import get_settings

# a: far ahead on the dense side, nothing on BM25; b: the reverse; c: second on both sides
CANDIDATES = {"a": (0.80, 0.0), "c": (0.45, 3.0), "d": (0.42, 0.5), "b": (0.40, 5.0)}


def test_min_max_rescales_to_the_unit_interval():
    assert fusion.min_max([2.0, 4.0, 3.0]) == [0.0, 1.0, 0.5]
    assert fusion.min_max([0.7, 0.7]) == [0.0, 0.0] and fusion.min_max([]) == []


def test_a_chunk_far_ahead_on_one_side_beats_one_middling_on_both():
    fused = fusion.convex_fusion(CANDIDATES, dense_weight=0.6)
    assert [id_ for id_, _ in fused] == ["a", "b", "c", "d"]
    assert fused[0][1] == pytest.approx(0.6) and fused[1][1] == pytest.approx(0.4)
    # reciprocal-rank fusion of the same two rankings puts c, second on both, first
    dense = sorted(CANDIDATES, key=lambda id_: -CANDIDATES[id_][0])
    bm25 = sorted(CANDIDATES, key=lambda id_: -CANDIDATES[id_][1])
    assert retrieval.reciprocal_rank_fusion([dense, bm25])[0][0] == "c"


def test_the_weight_moves_the_ranking_from_one_side_to_the_other():
    assert [id_ for id_, _ in fusion.convex_fusion(CANDIDATES, 1.0)] == ["a", "c", "d", "b"]
    assert [id_ for id_, _ in fusion.convex_fusion(CANDIDATES, 0.0)] == ["b", "c", "d", "a"]
    with pytest.raises(ValueError, match="between 0 and 1"):
        fusion.convex_fusion(CANDIDATES, 1.5)


def test_hybrid_retrieval_fuses_each_candidates_cosine_and_bm25_score(tmp_path, monkeypatch):
    settings = get_settings({"RAGFT_CACHE_DIR": str(tmp_path / "cache"), "RAGFT_PROFILE": "smoke"})
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "refunds.md").write_text("# Refunds\n\n## Money back\n\nA cancelled sailing is paid "
                                       "back in full.\n", encoding="utf-8")
    (folder / "forms.md").write_text("# Forms\n\n## Paperwork\n\nClaims go on the QX-7 form.\n",
                                     encoding="utf-8")
    (folder / "cafe.md").write_text("# Cafe\n\n## Food\n\nThe cafe sells soup.\n", encoding="utf-8")
    collection = store.open_collection(settings)
    store.index_folder(folder, collection, progress=False, settings=settings)
    seen = []
    monkeypatch.setattr(retrieval, "convex_fusion",
                        lambda candidates: seen.append(dict(candidates)) or fusion.convex_fusion(candidates))
    question = "which QX-7 paperwork gets my money back?"
    hybrid = retrieval.retrieve(question, 3, collection, settings=settings, method="hybrid")
    (candidates,) = seen
    assert set(candidates) == set(collection.get(include=[])["ids"])  # every chunk of either side
    dense = {c.id: c.score for c in retrieval.retrieve(question, 3, collection, settings=settings,
                                                       method="dense")}
    bm25 = lexical.lexical_index(collection, settings).scores(question, list(candidates))
    for id_, (cosine, score) in candidates.items():
        assert cosine == pytest.approx(dense[id_], abs=1e-5) and score == pytest.approx(bm25[id_])
    assert [c.id for c in hybrid] == [id_ for id_, _ in fusion.convex_fusion(candidates)]
