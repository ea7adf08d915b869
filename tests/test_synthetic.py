"""Synthetic datasets A and B: every answer is recomputed from its prompt."""

from __future__ import annotations

import re

import pytest

from lit_untrac.data.lexicon import parts_of_speech, plain_words
from lit_untrac.data.synthetic import DIGIT_WORDS, SPLITS, synthetic_a, synthetic_b
from lit_untrac.errors import UserError

WORD_TO_DIGIT = {w: str(i) for i, w in enumerate(DIGIT_WORDS)}


def unspell(text: str) -> int:
    return int("".join(WORD_TO_DIGIT[w] for w in text.split()))


def solve_a(prompt: str) -> tuple[str, str]:
    """(answer, answer format) of a dataset-A prompt, worked out from the text alone."""
    if m := re.fullmatch(r"What is the number that comes after (\d+)\?", prompt):
        return str(int(m[1]) + 1), "digits"
    if m := re.fullmatch(
        r"Determine the number that succeeds ([a-z ]+)\. Provide your answer in (numerical form|words)\.",
        prompt,
    ):
        value = unspell(m[1]) + 1
        return (
            (str(value), "digits")
            if m[2] == "numerical form"
            else (" ".join(DIGIT_WORDS[int(d)] for d in str(value)), "words")
        )
    if m := re.fullmatch(
        r"Determine the length of '([a-z]+)'\. Provide your answer in (numerical form|words)\.",
        prompt,
    ):
        n = len(m[1])
        return (
            (str(n), "digits")
            if m[2] == "numerical form"
            else (" ".join(DIGIT_WORDS[int(d)] for d in str(n)), "words")
        )
    raise AssertionError(f"unexpected prompt {prompt!r}")


def solve_b(prompt: str) -> str:
    if m := re.fullmatch(
        r"What letter remains in '([a-z]{5})' after extracting '(.)', '(.)', '(.)', '(.)'\?", prompt
    ):
        left = set(m[1]) - set(m.groups()[1:])
        assert len(left) == 1 and len(set(m[1])) == 5
        return left.pop()
    if m := re.fullmatch(
        r"Identify the character left after removing '(.)', '(.)', '(.)', '(.)' from '(.{5})'\.",
        prompt,
    ):
        removed, word = set(m.groups()[:4]), m[5]
        left = [c for c in word if c not in removed]
        assert len(left) == 1 and sorted(word) == sorted(list(removed) + left)
        return left[0]
    if m := re.fullmatch(
        r"Identify the part of speech of '([a-z]+)'\. Select your answer with the associated (letter|number)\.\nChoices:(.*)",
        prompt,
        re.S,
    ):
        (pos,) = parts_of_speech(m[1])
        choices = dict(re.findall(r"\n(\w)\. (\w+)", m[3]))
        return {v: k for k, v in choices.items()}[pos]
    raise AssertionError(f"unexpected prompt {prompt!r}")


@pytest.mark.parametrize("split", SPLITS)
def test_dataset_a_answers_are_right(split):
    examples = synthetic_a(split)
    assert len(examples) == 256
    assert len({e["prompt"] for e in examples}) == 256
    formats = set()
    for example in examples:
        answer, fmt = solve_a(example["prompt"])
        assert example["completion"] == answer
        formats.add(fmt)
    expected = {
        "test": "digits",
        "train_1": "digits",
        "train_2": "words",
        "train_3": "digits",
        "train_4": "words",
    }
    assert formats == {expected[split]}


@pytest.mark.parametrize("split", SPLITS)
def test_dataset_b_answers_are_right(split):
    examples = synthetic_b(split)
    assert len(examples) == 256
    assert len({e["prompt"] for e in examples}) == 256
    for example in examples:
        assert example["completion"] == solve_b(example["prompt"])
    answers = {e["completion"] for e in examples}
    # The answer format: a letter for test, sets 1 and 3; a digit for sets 2 and 4.
    if split in ("test", "train_1", "train_3"):
        assert all(a.isalpha() for a in answers)
    else:
        assert all(a.isdigit() for a in answers)


def test_dataset_a_number_ranges_follow_the_paper():
    def numbers(split):
        return (
            {int(re.search(r"(\d+)\?", e["prompt"])[1]) for e in synthetic_a(split)}
            if split == "test"
            else {
                unspell(re.search(r"succeeds ([a-z ]+)\.", e["prompt"])[1])
                for e in synthetic_a(split)
            }
        )

    assert numbers("test") == set(range(512, 768))
    assert numbers("train_1") == set(range(0, 511, 2))
    assert numbers("train_2") == set(range(1, 512, 2))


def test_length_sets_share_no_word_and_words_come_from_wordnet():
    def words(split):
        return [re.search(r"'([a-z]+)'", e["prompt"])[1] for e in synthetic_a(split)]

    three, four = words("train_3"), words("train_4")
    assert not set(three) & set(four)
    lexicon = set(plain_words(4, 14))
    assert set(three) | set(four) <= lexicon
    assert all(4 <= len(w) <= 14 for w in three + four)


def test_pos_sets_cover_their_parts_of_speech():
    def parts(split):
        return {
            parts_of_speech(re.search(r"'([a-z]+)'", e["prompt"])[1]).pop()
            for e in synthetic_b(split)
        }

    assert parts("train_3") == {"noun", "verb"}
    assert parts("train_4") == {"adjective", "adverb"}


@pytest.mark.parametrize("generator", [synthetic_a, synthetic_b])
def test_deterministic_by_seed(generator):
    assert generator("train_3", n=32, seed=5) == generator("train_3", n=32, seed=5)
    assert generator("train_3", n=32, seed=5) != generator("train_3", n=32, seed=6)


def test_bad_split_and_size_are_clear_errors():
    with pytest.raises(UserError, match="unknown synthetic split 'train_9'"):
        synthetic_a("train_9")
    with pytest.raises(UserError, match="n=300 is too many"):
        synthetic_a("test", n=300)
