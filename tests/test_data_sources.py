"""Reading named datasets: local files, generators, caps, subsets, bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lit_untrac.data.sources import DatasetSpec, load_raw, seeded_sample
from lit_untrac.errors import UserError

ROWS = [
    {"q": f"question {i}", "a": f"answer {i}", "group": "odd" if i % 2 else "even"}
    for i in range(10)
]


def write(tmp_path, suffix: str) -> str:
    path = tmp_path / f"data{suffix}"
    frame = pd.DataFrame(ROWS)
    if suffix == ".json":
        path.write_text(json.dumps(ROWS))
    elif suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS))
    elif suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    return str(path)


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_local_files_are_read_with_their_fields(tmp_path, suffix):
    spec = DatasetSpec(
        name="qa",
        files=write(tmp_path, suffix),
        prompt_field="q",
        completion_field="a",
        subset_field="group",
    )
    raw = load_raw(spec)
    assert raw.column_names == ["completion", "prompt", "subset"] or sorted(raw.column_names) == [
        "completion",
        "prompt",
        "subset",
    ]
    assert raw["prompt"] == [r["q"] for r in ROWS]
    assert raw["completion"] == [r["a"] for r in ROWS]
    assert raw["subset"] == [r["group"] for r in ROWS]


def test_text_files_give_one_row_per_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first line\nsecond line\nthird line\n")
    raw = load_raw(DatasetSpec(name="corpus", files=str(path), format="text"))
    assert raw["text"] == ["first line", "second line", "third line"]


def test_generator_source():
    raw = load_raw(
        DatasetSpec(name="t", generator="synthetic_a", generator_args={"split": "test", "n": 5})
    )
    assert len(raw) == 5 and raw["completion"][0].isdigit()


def test_seeded_sample_is_reproducible_and_ordered():
    a = seeded_sample(1000, 50, seed=3)
    assert a == seeded_sample(1000, 50, seed=3)
    assert a != seeded_sample(1000, 50, seed=4)
    assert a == sorted(a) and len(set(a)) == 50
    assert seeded_sample(10, None, 0) == list(range(10))
    assert seeded_sample(10, 20, 0) == list(range(10))


def test_max_documents_caps_rows_by_seed(tmp_path):
    path = write(tmp_path, ".jsonl")
    spec = dict(name="qa", files=path, prompt_field="q", completion_field="a", max_documents=4)
    first = load_raw(DatasetSpec(**spec, seed=1))["prompt"]
    assert first == load_raw(DatasetSpec(**spec, seed=1))["prompt"]
    assert first == [ROWS[i]["q"] for i in seeded_sample(10, 4, 1)]


@pytest.mark.parametrize(
    "spec, message",
    [
        (dict(files="/nonexistent/data.jsonl"), "file '/nonexistent/data.jsonl' does not exist"),
        (dict(generator="synthetic_z"), "unknown generator 'synthetic_z'"),
        (
            dict(
                generator="synthetic_a",
                generator_args={"split": "test", "n": 3},
                prompt_field="question",
            ),
            "has no field 'question'",
        ),
        (
            dict(generator="synthetic_a", generator_args={"split": "test", "n": 3}, format="text"),
            "has no field 'text'",
        ),
        (
            dict(generator="synthetic_a", generator_args={"split": "test", "n": 0}),
            "dataset 'bad' is empty",
        ),
    ],
)
def test_bad_sources_name_the_problem(spec, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        load_raw(DatasetSpec(name="bad", **spec))


def test_unreadable_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{not json at all\n')
    with pytest.raises(UserError, match="cannot read"):
        load_raw(DatasetSpec(name="broken", files=str(path)))


def test_spec_validation():
    with pytest.raises(UserError, match="exactly one source"):
        DatasetSpec(name="x")
    with pytest.raises(UserError, match="exactly one source"):
        DatasetSpec(name="x", hub="a/b", generator="synthetic_a")
    with pytest.raises(UserError, match="unknown format"):
        DatasetSpec(name="x", generator="synthetic_a", format="chat")
    with pytest.raises(UserError, match="no '/'"):
        DatasetSpec(name="a/b", generator="synthetic_a")
    with pytest.raises(UserError, match="max_examples=0"):
        DatasetSpec(name="x", generator="synthetic_a", max_examples=0)
