from ragft_helpers import cli, doctor


def test_doctor_passes_on_a_prepared_machine(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    for item in ("language model", "embedding model", "wikitext", "device", "profile"):
        assert item in out


def test_doctor_fails_with_a_fix_for_each_problem(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("RAGFT_WIKITEXT_DIR", str(tmp_path / "missing"))
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[FIX] wikitext" in out and "unset RAGFT_WIKITEXT_DIR" in out


def test_doctor_reports_an_invalid_profile_instead_of_crashing(monkeypatch):
    monkeypatch.setenv("RAGFT_PROFILE", "turbo")
    checks = doctor.run_checks()
    assert [c.ok for c in checks] == [False] and "smoke" in checks[0].fix
