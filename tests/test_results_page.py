"""The expected-results page (docs/make_results_page.py), on small synthetic results files."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import make_results_page  # noqa: E402

SYSTEMS = ("base", "RAG", "FT", "FT+aug")


def _interval(system: str, metric: str, value: float, n: int = 20) -> dict:
    return {"system": system, "metric": metric, "value": value, "low": value - 0.1,
            "high": value + 0.1, "n": n}


def showdown() -> dict:
    """A document shaped like the one notebook 08 saves, with invented numbers."""
    mc = {"base": 0.25, "RAG": 0.7, "FT": 0.3, "FT+aug": 0.35}
    return {
        "settings": {"profile": "laptop", "seed": 42, "model": None, "cache_dir": "/c"},
        "profile": {"name": "laptop", "description": "The default."},
        "provenance": [{"kind": "model", "name": "TinyLM", "source": "bundled offline copy",
                        "location": "/c/models/TinyLM", "note": "hub unreachable"}],
        "versions": {"torch": "9.9.9+cpu", "chromadb": "8.8.8"},
        "saved_at": "2030-01-02T03:04:05Z",
        "accuracy": [_interval(s, m, mc[s] if m == "mc" else 0.5) for s in SYSTEMS
                     for m in ("mc", "free", "abstention", "hallucination")],
        "accuracy_by_type": [_interval(s, "mc_single-hop", mc[s] + 0.05, 8) for s in SYSTEMS],
        "costs": [{"system": s, "training s": 12.0 if "FT" in s else 0.0, "latency p50 s": 1.25,
                   "peak RSS MB": 1500} for s in SYSTEMS],
        "perplexities": [{"model": "base", "WikiText perplexity": 40.0, "KB-text perplexity": 30.0},
                         {"model": "kb-full", "WikiText perplexity": 42.0, "KB-text perplexity": 10.0}],
        "forgetting": [{"step": 0, "wikitext_perplexity": 60.0, "kb_loss": float("nan")},
                       {"step": 64, "wikitext_perplexity": 66.3, "kb_loss": 1.5}],
        # the shape notebook 08 saves: multiple choice with its interval, free-form accuracy
        "freshness": [{"system": "RAG, before", "multiple choice": 0.0, "low": 0.0, "high": 0.0,
                       "n": 4, "free-form": 0.0, "seconds to adapt": float("nan")},
                      {"system": "RAG, after", "multiple choice": 0.75, "low": 0.5, "high": 1.0,
                       "n": 4, "free-form": 0.5, "seconds to adapt": 0.4}],
        "claims": [{"claim": "RAG adapts to evolving information",
                    "article": "RAG adapts to dynamic or evolving information",
                    "evidence": "updated questions: RAG 0.75 vs FT 0.25", "verdict": "supported",
                    "direction": True, "asserted": "supported"},
                   {"claim": "RAG is more creative", "article": "RAG \"can generate more creative\" responses",
                    "evidence": "distinct-2: 0.60 vs 0.62", "verdict": "inconclusive at this scale",
                    "direction": False, "asserted": ""}],
        "variants": [{"name": "kb-full", "lora": False, "augmented": False, "steps": 60,
                      "tokens_seen": 61440, "train_seconds": 300.0, "peak_memory_mb": 2900.0,
                      "first_loss": 3.5, "final_loss": 2.0}],
    }


def tasks() -> dict:
    return {"settings": {"profile": "laptop", "seed": 42}, "saved_at": "2030-01-02T02:00:00Z",
            "versions": {"torch": "9.9.9+cpu"}, "provenance": [],
            "table": [{"system": "kNN", "n": 250, "macro_f1": 0.79, "macro_f1_low": 0.74,
                       "macro_f1_high": 0.84, "accuracy": 0.8, "accuracy_low": 0.75,
                       "accuracy_high": 0.85, "ms_per_message": 22.0,
                       "train s": 0.0, "index s": 1.0}],
            "curve": [{"per_label": 2, "system": "kNN", "macro_f1": 0.6}],
            "crossover": {"status": "crossed", "per_label": 8},
            "new_intent": [{"system": "kNN", "group_travel recall": 0.4}],
            "runs": {"minilm": {"training_messages": 600, "steps": 150, "train_seconds": 98.0,
                                "peak_memory_mb": 1900.0, "first_loss": 2.3, "final_loss": 0.14}},
            "peak_memory_mb": 5879.2}


def raft() -> dict:
    """Shaped like notebook 06's raft-<profile>.json."""
    return {"settings": {"profile": "laptop", "seed": 42}, "saved_at": "2030-01-02T01:00:00Z",
            "versions": {"torch": "9.9.9+cpu"}, "provenance": [], "questions": 12,
            "table": [{"system": s, "phrasing": p, "metric": m, "value": v, "low": v - 0.1,
                       "high": v + 0.1, "n": 8}
                      for s, v in (("base + RAG", 0.25), ("RAFT LoRA + RAG", 0.5))
                      for p in ("canonical", "variant") for m in ("free", "false_abstention",
                                                                  "abstention", "mc")],
            "pooled": {"base + RAG": {"value": 0.21, "low": 0.08, "high": 0.38, "n": 24},
                       "RAFT LoRA + RAG": {"value": 0.42, "low": 0.25, "high": 0.62, "n": 24}},
            "readers": [{"name": "raft-lora", "lora": True, "examples": 384, "oracle_share": 0.75,
                         "trainable_params": 921600, "total_params": 135436800, "steps": 96,
                         "train_seconds": 307.4, "peak_memory_mb": 4800.0, "first_loss": 2.1,
                         "final_loss": 0.6}]}


def _write(folder: Path, name: str, document: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(document))  # NaN as JSON's NaN, as save_results writes


def _page(tmp_path: Path, **documents: dict) -> str:
    """The page written from these results files (stem -> document) beside the showdown's."""
    results = tmp_path / "results"
    for stem, document in {"showdown": showdown(), **documents}.items():
        _write(results, f"{stem}-laptop.json", document)
    out = tmp_path / "page.md"
    assert make_results_page.main(["--results-dir", str(results), "--out", str(out)]) == 0
    return out.read_text()


def test_page_from_a_showdown_file(tmp_path):
    page = _page(tmp_path)
    assert page.startswith("# Expected results at the `laptop` profile")
    assert "| saved | 2030-01-02T03:04:05Z |" in page
    assert "torch 9.9.9+cpu, chromadb 8.8.8" in page
    assert "| model: TinyLM | bundled offline copy — hub unreachable |" in page
    assert "| machine | not recorded in the results file" in page
    assert "| RAG | 0.70 [0.60, 0.80] (n=20) |" in page
    assert "| RAG, before | 0.00 [0.00, 0.00] (n=4) | 0.00 | — |" in page  # NaN shown as a dash
    assert "| RAG, after | 0.75 [0.50, 1.00] (n=4) | 0.50 | 0.4 |" in page
    assert "| kb-full | no | no | 60 | 61,440 | 300 | 2,900 | 3.50 → 2.00 |" in page
    assert "| 0 | 60.0 | — |" in page and "| 64 | 66.3 | 1.50 |" in page  # the forgetting run
    # Every claim with the article's words, its computed verdict and the direction CI asserts.
    assert ("| RAG adapts to evolving information | RAG adapts to dynamic or evolving information | "
            "updated questions: RAG 0.75 vs FT 0.25 | **supported** | supported |") in page
    assert "| **inconclusive at this scale** | — |" in page
    assert "No `tasks-laptop.json` beside the showdown's file" in page
    assert "No `raft-laptop.json` beside the showdown's file" in page
    # The reference numbers a student's run is compared with, beside the page.
    numbers = json.loads((tmp_path / "page.json").read_text())["numbers"]
    assert {"notebook": "08", "system": "RAG", "metric": "mc", "value": 0.7, "low": 0.6,
            "high": 0.8, "n": 20} in [{**n, "low": round(n["low"], 2), "high": round(n["high"], 2)} for n in numbers]


def test_page_with_notebook_07(tmp_path):
    page = _page(tmp_path, tasks=tasks())
    assert "## Notebook 07" in page and "| kNN | 0.79 [0.74, 0.84] (n=250) |" in page
    assert "| minilm | 600 | 150 | 98 | 1,900 | 2.30 → 0.14 |" in page
    assert "5,879 MB" in page
    # Every figure is drawn from the file, beside the page, and shown on it.
    for name in ("accuracy", "accuracy-by-type", "perplexity", "tasks", "learning-curve"):
        assert (tmp_path / "page" / f"{name}.png").stat().st_size > 1000
        assert f"](page/{name}.png)" in page


def test_page_with_notebook_06(tmp_path):
    page = _page(tmp_path, raft=raft())
    assert "`raft-laptop.json` (notebook 06)" in page and "### Notebook 06" in page
    assert "## Notebook 06: teach the model to read (RAFT)" in page
    assert "12 questions, each asked as written and as a variant" in page
    # One table per phrasing, in the order the file gives them.
    assert page.index("**canonical**") < page.index("**variant**")
    assert "| RAFT LoRA + RAG | 0.50 [0.40, 0.60] (n=8) | 0.50 [0.40, 0.60] (n=8) |" in page
    assert "| RAFT LoRA + RAG | 0.42 [0.25, 0.62] (n=24) |" in page
    assert "| raft-lora | yes | 384 | 0.75 | 96 | 921,600 | 307 | 4,800 | 2.10 → 0.60 |" in page
    assert "No `tasks-laptop.json` beside the showdown's file" in page
    assert "No `raft-laptop.json`" not in page
    assert (tmp_path / "page" / "raft-free-form.png").is_file() and "](page/raft-free-form.png)" in page


def test_without_a_results_file_it_writes_nothing_and_names_the_command(tmp_path, capsys):
    out = tmp_path / "page.md"
    assert make_results_page.main(["--results-dir", str(tmp_path), "--out", str(out)]) == 1
    assert not out.exists()
    message = capsys.readouterr().err
    assert str(tmp_path / "showdown-laptop.json") in message
    assert "RAGFT_PROFILE=laptop make run" in message
    assert "notebooks/08_rag_vs_finetuning_showdown.ipynb" in message
    assert (ROOT / make_results_page.SHOWDOWN_NOTEBOOK).is_file()
