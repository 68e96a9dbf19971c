"""A run compared with the project's reference run (results.compare_with_reference, the doctor's
check): numbers inside the reference's 95% interval are "as expected", others are named."""
import json
from dataclasses import replace

from ragft_helpers import doctor, results
from ragft_helpers.config import get_profile, get_settings


def _showdown(rag_mc: float) -> dict:
    return {"accuracy": [{"system": "base", "metric": "mc", "value": 0.25, "low": 0.1, "high": 0.4, "n": 32},
                         {"system": "RAG", "metric": "mc", "value": rag_mc, "low": rag_mc - 0.15,
                          "high": rag_mc + 0.15, "n": 32}],
            "freshness": [{"system": "RAG, after", "multiple choice": 0.75, "low": 0.5, "high": 1.0,
                           "n": 8, "free-form": 0.5}]}


def _raft(value: float) -> dict:
    return {"pooled": {"RAFT LoRA + RAG": {"value": value, "low": value - 0.2, "high": value + 0.2, "n": 24}}}


def _tasks(f1: float) -> dict:
    return {"table": [{"system": "kNN", "n": 250, "macro_f1": f1, "macro_f1_low": f1 - 0.05,
                       "macro_f1_high": f1 + 0.05}]}


def test_key_numbers_cover_the_three_notebooks():
    numbers = results.key_numbers({"showdown": _showdown(0.7), "raft": _raft(0.4), "tasks": _tasks(0.8)})
    keys = {(n["notebook"], n["system"], n["metric"]) for n in numbers}
    assert keys == {("08", "base", "mc"), ("08", "RAG", "mc"),
                    ("08", "RAG, after", "updated questions, multiple choice"),
                    ("06", "RAFT LoRA + RAG", "free-form, both phrasings"), ("07", "kNN", "macro-F1")}
    assert results.key_numbers({}) == []


def test_a_number_outside_the_reference_interval_is_named():
    reference = {"numbers": results.key_numbers({"showdown": _showdown(0.7), "tasks": _tasks(0.8)})}
    run = results.key_numbers({"showdown": _showdown(0.3), "tasks": _tasks(0.82), "raft": _raft(0.4)})
    table = results.compare_with_reference(run, reference).set_index(["system", "metric"])
    assert table.loc[("RAG", "mc"), "verdict"] == "lower than expected"
    assert table.loc[("base", "mc"), "verdict"] == "as expected"
    assert table.loc[("kNN", "macro-F1"), "verdict"] == "as expected"
    assert table.loc[("RAG", "mc"), "reference interval"] == "[0.55, 0.85]"
    assert ("RAFT LoRA + RAG", "free-form, both phrasings") not in table.index  # not in the reference
    higher = results.compare_with_reference(
        results.key_numbers({"tasks": _tasks(0.95)}), reference)
    assert list(higher["verdict"]) == ["higher than expected"]
    # A metric with no questions behind it (NaN) is not compared.
    empty = results.key_numbers({"tasks": _tasks(float("nan"))})
    assert results.compare_with_reference(empty, reference).empty


def test_the_doctor_reports_the_saved_run_against_the_reference(tmp_path):
    settings = replace(get_settings({"RAGFT_CACHE_DIR": str(tmp_path / "cache")}), profile=get_profile("smoke"))
    saved, reference_dir = tmp_path / "saved", tmp_path / "docs"
    # No reference for the profile: said so, nothing to fix.
    check = doctor.reference_check(settings, saved, reference_dir)
    assert check.ok and "no reference run for profile 'smoke'" in check.value
    reference_dir.mkdir()
    results.reference_path("smoke", reference_dir).write_text(json.dumps(
        {"saved_at": "2030-01-01", "numbers": results.key_numbers({"showdown": _showdown(0.7)})}))
    assert "no saved run at profile 'smoke' yet" in doctor.reference_check(settings, saved, reference_dir).value
    results.save_results(_showdown(0.7), settings, results_dir=saved)
    check = doctor.reference_check(settings, saved, reference_dir)
    assert check.value.startswith("3 of 3 numbers of notebooks 08 within") and not check.fix
    results.save_results(_showdown(0.2), settings, results_dir=saved)
    check = doctor.reference_check(settings, saved, reference_dir)
    assert check.value.startswith("2 of 3 numbers") and "RAG mc 0.20 (reference 0.70)" in check.value
    assert "docs/results-smoke.md" in check.fix and "RAGFT_MODEL" in check.fix


def test_saved_documents_leave_out_another_seed_or_model(tmp_path, capsys):
    settings = replace(get_settings({"RAGFT_CACHE_DIR": str(tmp_path / "cache")}), profile=get_profile("smoke"))
    results.save_results(_showdown(0.7), settings, results_dir=tmp_path)
    results.save_results(_raft(0.4), replace(settings, seed=settings.seed + 1), results_dir=tmp_path, stem="raft")
    results.save_results(_tasks(0.8), replace(settings, model="gpt2-medium"), results_dir=tmp_path, stem="tasks")
    assert list(results.saved_documents(settings, tmp_path)) == ["showdown"]
    said = capsys.readouterr().out
    assert f"notebook 06 left out: they ran with seed {settings.seed + 1}" in said
    assert "Results of notebook 07 left out" in said and "model gpt2-medium" in said
    assert list(results.saved_documents(replace(settings, seed=settings.seed + 1), tmp_path)) == ["raft"]


def test_a_missing_results_file_names_the_notebook_that_saves_it(tmp_path):
    settings = get_settings()
    for stem, notebook in results.NOTEBOOKS.items():
        try:
            results.load_results(settings, tmp_path, stem)
        except FileNotFoundError as err:
            assert f"run notebook {notebook}" in str(err)
        else:
            raise AssertionError("no error without a results file")
