"""The paper's test-set preparations, run on local files with the hub datasets' fields."""

from __future__ import annotations

import json

import pytest

from lit_untrac.data.recipes import truthfulqa_category, winobias_subset
from lit_untrac.data.sources import DatasetSpec, load_raw
from lit_untrac.errors import UserError


def jsonl(tmp_path, name, rows) -> str:
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def words(n: int) -> str:
    return " ".join(["w"] * n)


def test_toxigen_keeps_toxic_texts_of_9_to_24_words_by_group(tmp_path):
    rows = [
        {"generation": words(8), "group": "a", "prompt_label": 1},  # too short (must be > 8)
        {"generation": words(9), "group": "a", "prompt_label": 1},
        {"generation": words(24), "group": "b", "prompt_label": 1},
        {"generation": words(25), "group": "b", "prompt_label": 1},  # too long
        {"generation": words(12), "group": "b", "prompt_label": 0},  # not toxic
        {"generation": words(10) + " x", "group": "a", "prompt_label": 1},
        {"generation": words(11) + " y", "group": "a", "prompt_label": 1},
    ]
    spec = DatasetSpec(
        name="toxigen",
        files=jsonl(tmp_path, "t.jsonl", rows),
        recipe="toxigen",
        recipe_args={"per_subset": 2},
        prompt_field=None,
        completion_field="text",
        subset_field="subset",
    )
    raw = load_raw(spec)
    assert sorted(raw["subset"]) == ["a", "a", "b"]
    assert all(8 < len(t.split(" ")) <= 24 for t in raw["completion"])
    assert words(24) in raw["completion"]


def test_winobias_subsets_by_pronoun_gender(tmp_path):
    rows = [
        {"tokens": ["The", "nurse", "said", "she", "was", "late"], "kind": "pro"},
        {"tokens": ["The", "chief", "said", "he", "was", "late"], "kind": "anti"},
        {
            "tokens": ["She", "told", "him", "to", "go"],
            "kind": "pro",
        },  # 'She' capitalised: only 'him' counts
        {"tokens": ["she", "told", "him", "to", "go"], "kind": "pro"},  # both: dropped
        {"tokens": ["nobody", "came"], "kind": "anti"},  # neither: dropped
    ]
    spec = DatasetSpec(
        name="winobias",
        files=jsonl(tmp_path, "w.jsonl", rows),
        recipe="winobias",
        prompt_field=None,
        completion_field="text",
        subset_field="subset",
    )
    raw = load_raw(spec)
    assert raw["subset"] == ["pro_female", "anti_male", "pro_male"]
    assert raw["completion"][0] == "The nurse said she was late"
    assert winobias_subset(["her", "his"], "pro") is None


def test_truthfulqa_one_example_per_incorrect_answer_in_large_categories(tmp_path):
    rows = [
        {"question": " Q1 ", "incorrect_answers": ["a1", " a2 "], "category": "Misconceptions"},
        {"question": "Q2", "incorrect_answers": ["b1"], "category": "Misconceptions"},
        {"question": "Q3", "incorrect_answers": ["c1", "c2"], "category": "Indexical Error: Time"},
        {"question": "Q4", "incorrect_answers": ["d1"], "category": "Indexical Error: Location"},
        {"question": "Q5", "incorrect_answers": ["e1"], "category": "Law"},  # too few: dropped
    ]
    spec = DatasetSpec(
        name="truthfulqa",
        files=jsonl(tmp_path, "q.jsonl", rows),
        recipe="truthfulqa",
        recipe_args={"min_examples": 3},
        subset_field="subset",
    )
    raw = load_raw(spec)
    assert list(zip(raw["prompt"], raw["completion"], raw["subset"])) == [
        ("Q1", "a1", "misconceptions"),
        ("Q1", "a2", "misconceptions"),
        ("Q2", "b1", "misconceptions"),
        ("Q3", "c1", "indexical_error"),
        ("Q3", "c2", "indexical_error"),
        ("Q4", "d1", "indexical_error"),
    ]
    assert truthfulqa_category("Confusion: People") == "confusion"


def test_recipe_needs_its_fields(tmp_path):
    spec = DatasetSpec(
        name="t", files=jsonl(tmp_path, "x.jsonl", [{"text": "a"}]), recipe="toxigen"
    )
    with pytest.raises(UserError, match=r"recipe 'toxigen' needs the field\(s\)"):
        load_raw(spec)
    with pytest.raises(UserError, match="unknown recipe 'toxic'"):
        load_raw(
            DatasetSpec(name="t", files=jsonl(tmp_path, "y.jsonl", [{"text": "a"}]), recipe="toxic")
        )
