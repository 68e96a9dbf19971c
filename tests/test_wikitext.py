"""WikiText loading and structure, on tiny fixture files (no network, no ../shared needed)."""
from dataclasses import replace
from pathlib import Path

import pytest

from ragft_helpers import wikitext
from ragft_helpers.config import PROFILES, get_settings

SHARED_WIKITEXT = Path(__file__).resolve().parents[2] / "shared/data/wikitext-2-raw"


@pytest.fixture(autouse=True)
def no_hub_dataset(monkeypatch):
    """The hub (or a datasets cache holding WikiText) comes first in the chain: keep it out."""
    monkeypatch.setattr(wikitext, "_load_hub_dataset", lambda: (None, "hub not used in tests"))


def tiny_hub_dataset():
    from datasets import Dataset, DatasetDict

    return DatasetDict({"train": Dataset.from_dict({"text": ["x" * 40 + "\n"] * 10}),
                        "validation": Dataset.from_dict({"text": [" v \n"]})})


def article_lines(index: int) -> list[str]:
    return [
        f" = Article {index} = ",
        " ",
        f" Article {index} opens with 1 @,@ 000 words and a state @-@ of @-@ the @-@ art claim . ",
        " = = History = = ",
        f" It was revised {index} times , 3 @.@ 5 on average . ",
        " ",
    ]


def write_raw(folder: Path, name: str, articles: range, newline: str = "\n") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [line for index in articles for line in article_lines(index)]
    (folder / name).write_bytes((newline.join(lines) + newline).encode("utf-8"))
    return lines


def settings_for(folder: Path | None, tmp_path: Path, **profile_changes):
    env = {"RAGFT_PROFILE": "smoke", "RAGFT_CACHE_DIR": str(tmp_path / "cache")}
    if folder is not None:
        env["RAGFT_WIKITEXT_DIR"] = str(folder)
    settings = get_settings(env)
    return replace(settings, profile=replace(PROFILES["smoke"], **profile_changes))


def titles(rows) -> list[str]:
    return [title for title in map(wikitext.article_title, rows) if title is not None]


# ---- structure -----------------------------------------------------------------------------------

@pytest.mark.parametrize("line, level", [
    (" = Robert Boulter = \n", 1),
    (" = Kiss You ( One Direction song ) = ", 1),
    (" = = Career = = \n", 2),
    (" = = = 2000 – 05 = = = ", 3),
    (" = = = = = Final Four = = = = = ", 5),
    (" = = Unbalanced = ", 0),
    (" = Qualified for the next round ", 0),
    (" He scored 2 = 1 + 1 . ", 0),
    ("", 0),
])
def test_heading_level(line, level):
    assert wikitext.heading_level(line) == level
    assert wikitext.is_heading(line) == (level > 0)


def test_article_title_only_for_level_one_headings():
    assert wikitext.article_title(" = Valkyria Chronicles III = \n") == "Valkyria Chronicles III"
    assert wikitext.article_title(" = = Gameplay = = \n") is None
    assert wikitext.article_title(" plain text \n") is None


def test_split_articles_keeps_sections_inside_and_loses_nothing():
    lines = ["", " = A = \n", " a \n", " = = Sec = = \n", " b \n", " = B = \n", " c \n"]
    articles = wikitext.split_articles(lines)
    assert [wikitext.article_title(a[1] if a[0] == "" else a[0]) for a in articles] == ["A", "B"]
    assert articles[0] == ["", " = A = \n", " a \n", " = = Sec = = \n", " b \n"]
    assert [line for article in articles for line in article] == lines
    assert wikitext.split_articles([" no heading \n"]) == [[" no heading \n"]]
    assert wikitext.split_articles([]) == []


@pytest.mark.parametrize("escaped, plain", [
    ("1 @,@ 000", "1,000"),
    ("state @-@ of @-@ the @-@ art", "state-of-the-art"),
    ("3 @.@ 5", "3.5"),
    ("no escapes here", "no escapes here"),
])
def test_undo_escapes(escaped, plain):
    assert wikitext.undo_escapes(escaped) == plain


def test_detokenize_for_display():
    raw = ' He said " yes " , in 1 @,@ 000 ( of 3 @.@ 5 ) cases ; it \'s done . '
    assert wikitext.detokenize(raw) == ' He said "yes", in 1,000 (of 3.5) cases; it\'s done. '


# ---- raw files and folders -----------------------------------------------------------------------

def test_lf_and_crlf_files_give_the_same_rows(tmp_path):
    write_raw(tmp_path / "lf", "wiki.test.raw", range(3), "\n")
    write_raw(tmp_path / "crlf", "wiki.test.raw", range(3), "\r\n")
    lf = wikitext.read_raw_lines(tmp_path / "lf" / "wiki.test.raw")
    crlf = wikitext.read_raw_lines(tmp_path / "crlf" / "wiki.test.raw")
    assert lf == crlf
    assert lf[0] == " = Article 0 = \n" and lf[1] == ""  # like the hub dataset: blank rows are ""
    assert not any("\r" in row for row in crlf)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_three_split_folder_loads_as_is(tmp_path, newline, capsys):
    folder = tmp_path / "wt"
    train = write_raw(folder, "wiki.train.raw", range(0, 5), newline)
    write_raw(folder, "wiki.valid.raw", range(5, 7), newline)
    write_raw(folder, "wiki.test.raw", range(7, 9), newline)
    data, provenance = wikitext.load_wikitext(settings_for(folder, tmp_path))
    assert set(data) == {"train", "validation", "test"}
    assert len(data["train"]) == len(train)
    assert titles(data["validation"]["text"]) == ["Article 5", "Article 6"]
    assert provenance.source == wikitext.SOURCE_FOLDER
    assert capsys.readouterr().out.startswith(
        f"dataset: wikitext-2-raw-v1 ({wikitext.SOURCE_FOLDER} — ")


def test_single_file_is_split_by_whole_articles_deterministically(tmp_path):
    folder = tmp_path / "wt"
    lines = write_raw(folder, "wiki.test.raw", range(25), "\r\n")
    settings = settings_for(folder, tmp_path)
    first, provenance = wikitext.load_wikitext(settings, verbose=False)
    second, _ = wikitext.load_wikitext(settings, verbose=False)
    assert first["train"]["text"] == second["train"]["text"]
    assert first["validation"]["text"] == second["validation"]["text"]
    assert titles(first["validation"]["text"]) == ["Article 9", "Article 19"]
    assert len(titles(first["train"]["text"])) == 23
    originals = {a[0].strip(): a for a in wikitext.split_articles(wikitext.read_raw_lines(folder / "wiki.test.raw"))}
    for split in ("train", "validation"):
        for article in wikitext.split_articles(first[split]["text"]):
            assert article == originals[article[0].strip()]  # whole and unchanged
    assert len(lines) == len(first["train"]) + len(first["validation"])
    assert "23 train, 2 validation" in provenance.note


def test_few_articles_hold_out_the_last(tmp_path):
    folder = tmp_path / "wt"
    write_raw(folder, "wiki.valid.raw", range(3))
    data, _ = wikitext.load_wikitext(settings_for(folder, tmp_path), verbose=False)
    assert titles(data["train"]["text"]) == ["Article 0", "Article 1"]
    assert titles(data["validation"]["text"]) == ["Article 2"]


def test_one_article_cannot_be_split(tmp_path):
    folder = tmp_path / "wt"
    write_raw(folder, "wiki.test.raw", range(1))
    with pytest.raises(wikitext.WikiTextError, match="at least 2"):
        wikitext.load_wikitext(settings_for(folder, tmp_path), verbose=False)


def test_train_and_test_without_valid_uses_test_as_validation(tmp_path):
    folder = tmp_path / "wt"
    write_raw(folder, "wiki.train.raw", range(4))
    test = write_raw(folder, "wiki.test.raw", range(4, 6))
    data, provenance = wikitext.load_wikitext(settings_for(folder, tmp_path), verbose=False)
    assert set(data) == {"train", "validation"}
    assert len(data["validation"]) == len(test)
    assert "test used as validation" in provenance.note


def test_train_max_chars_keeps_whole_lines_from_the_start(tmp_path):
    folder = tmp_path / "wt"
    write_raw(folder, "wiki.train.raw", range(10))
    write_raw(folder, "wiki.valid.raw", range(10, 12))
    full, _ = wikitext.load_wikitext(settings_for(folder, tmp_path, train_max_chars=None), verbose=False)
    capped, provenance = wikitext.load_wikitext(settings_for(folder, tmp_path, train_max_chars=500),
                                                verbose=False)
    kept = capped["train"]["text"]
    assert kept == full["train"]["text"][:len(kept)]
    assert sum(map(len, kept)) <= 500 < sum(map(len, full["train"]["text"][:len(kept) + 1]))
    assert len(capped["validation"]) == len(full["validation"])
    assert "train capped at 500 characters" in provenance.note


@pytest.mark.parametrize("case", ["missing folder", "folder without wiki.*.raw"])
def test_bad_wikitext_dir_is_an_error_naming_folder_and_files(tmp_path, case):
    folder = tmp_path / "wikitext"
    if case == "folder without wiki.*.raw":
        folder.mkdir()
        (folder / "wiki.train.txt").write_text(" = A = \n")
    with pytest.raises(wikitext.WikiTextError) as caught:
        wikitext.load_wikitext(settings_for(folder, tmp_path), verbose=False)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert str(folder) in message
    for name in ("wiki.train.raw", "wiki.valid.raw", "wiki.test.raw", "RAGFT_WIKITEXT_DIR"):
        assert name in message


def test_fallback_corpus_when_hub_is_unavailable(tmp_path, monkeypatch):
    fallback = tmp_path / "fallback"
    write_raw(fallback, "wiki.train.raw", range(4))
    write_raw(fallback, "wiki.valid.raw", range(4, 5))
    monkeypatch.setattr(wikitext, "FALLBACK_DIR", fallback)
    data, provenance = wikitext.load_wikitext(settings_for(None, tmp_path), verbose=False)
    assert titles(data["validation"]["text"]) == ["Article 4"]
    assert provenance.source == wikitext.SOURCE_FALLBACK
    assert "hub not used in tests" in provenance.note


def test_hub_dataset_comes_before_the_fallback_and_is_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(wikitext, "FALLBACK_DIR", tmp_path / "no-fallback")
    monkeypatch.setattr(wikitext, "_load_hub_dataset", lambda: (tiny_hub_dataset(), "wikitext"))
    data, provenance = wikitext.load_wikitext(settings_for(None, tmp_path, train_max_chars=100),
                                              verbose=False)
    assert len(data["train"]) == 2
    assert provenance.name == wikitext.DATASET_NAME and provenance.location == "wikitext"


def test_no_source_at_all_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.setattr(wikitext, "FALLBACK_DIR", tmp_path / "no-fallback")
    with pytest.raises(wikitext.WikiTextError, match="RAGFT_WIKITEXT_DIR"):
        wikitext.load_wikitext(settings_for(None, tmp_path), verbose=False)


@pytest.mark.skipif(not (SHARED_WIKITEXT / "wiki.test.raw").is_file(),
                    reason="the shared WikiText-2 test split is not present")
def test_real_wikitext_test_split_is_split_by_whole_articles(tmp_path):
    # The shared README counts 64 lines starting " = "; two of them (" = Qualified for the next
    # round", " = National record") are table legends without the closing " =", not headings.
    settings = settings_for(SHARED_WIKITEXT, tmp_path, train_max_chars=None)
    data, _ = wikitext.load_wikitext(settings, verbose=False)
    train_titles = titles(data["train"]["text"])
    validation_titles = titles(data["validation"]["text"])
    assert len(train_titles) + len(validation_titles) == 62
    assert len(validation_titles) == 6
    assert not set(train_titles) & set(validation_titles)
    again, _ = wikitext.load_wikitext(settings, verbose=False)
    assert titles(again["validation"]["text"]) == validation_titles


def test_hub_dataset_comes_before_the_folder_which_is_still_checked(tmp_path, monkeypatch):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "wt"
    write_raw(folder, "wiki.test.raw", range(12))
    hub_data = DatasetDict({"train": Dataset.from_dict({"text": [" = Hub = \n"]}),
                            "validation": Dataset.from_dict({"text": [" v \n"]})})
    monkeypatch.setattr(wikitext, "_load_hub_dataset", lambda: (hub_data, "wikitext"))
    data, provenance = wikitext.load_wikitext(settings_for(folder, tmp_path), verbose=False)
    assert titles(data["train"]["text"]) == ["Hub"] and provenance.location == "wikitext"
    monkeypatch.setattr(wikitext, "_load_hub_dataset", lambda: (None, "offline"))
    data, provenance = wikitext.load_wikitext(settings_for(folder, tmp_path), verbose=False)
    assert provenance.source == wikitext.SOURCE_FOLDER and "offline" in provenance.note
    with pytest.raises(wikitext.WikiTextError, match="does not exist"):
        wikitext.load_wikitext(settings_for(tmp_path / "nowhere", tmp_path), verbose=False)


def test_a_wikitext_folder_is_keyed_by_its_text_not_its_path(tmp_path, no_hub_dataset):
    """The same wiki.*.raw files in another folder (another checkout, CI's ../shared) reload the
    WikiText run trained on them; changed text trains anew."""
    from ragft_helpers.finetune_wikitext import default_run_dir

    def run_dir(folder: Path) -> Path:
        settings = get_settings({"RAGFT_PROFILE": "smoke", "RAGFT_CACHE_DIR": str(tmp_path / "cache"),
                                 "RAGFT_WIKITEXT_DIR": str(folder)})
        _, dataset = wikitext.load_wikitext(settings, verbose=False)
        assert dataset.source == wikitext.SOURCE_FOLDER
        model = replace(dataset, kind="model", name="m", location="m")  # the same in every run
        return default_run_dir(settings, model, dataset)

    for name in ("here", "there"):
        write_raw(tmp_path / name, "wiki.train.raw", range(0, 20))
    write_raw(tmp_path / "changed", "wiki.train.raw", range(1, 21))
    assert run_dir(tmp_path / "here") == run_dir(tmp_path / "there")
    assert run_dir(tmp_path / "changed") != run_dir(tmp_path / "here")
