"""Synthetic datasets A and B of the UnTrac paper (its Table 1).

Each has one test set and four training sets: set 1 asks the test's task in
the test's answer format, set 2 the same task in another format, set 3
another task in the test's format, set 4 another task in another format.
Every example is a ``{"prompt", "completion"}`` pair whose answer is right by
construction; words come from WordNet (:mod:`lit_untrac.data.lexicon`).

Dataset A (the test answers in digits):

* test: "What is the number that comes after {n}?", n from 512 to 767;
* train_1 / train_2: "Determine the number that succeeds {n digit by digit}.
  Provide your answer in numerical form." / "... in words.", n even from 0
  to 510 / odd from 1 to 511; a words answer is spelled digit by digit;
* train_3 / train_4: "Determine the length of '{word}'. ..." with the same two
  endings, words of 4 to 14 letters, the two sets sharing no word.

Dataset B (the test answers with a letter):

* test: "What letter remains in '{s}' after extracting '{c1}', ..., '{c4}'?",
  s of 5 distinct letters;
* train_1 / train_2: "Identify the character left after removing '{d1}', ...,
  '{d4}' from '{s}'.", s of 4 digits and a letter (answer the letter) / of 5
  distinct digits (answer a digit);
* train_3 / train_4: the part of speech of a word, with lettered choices
  (nouns and verbs, answer a letter) / numbered choices (adjectives and
  adverbs, answer a digit).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

from lit_untrac.data.lexicon import plain_words, words_with_single_pos
from lit_untrac.errors import UserError, choose

SPLITS = ("test", "train_1", "train_2", "train_3", "train_4")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
POS_LETTERED = ("noun", "verb", "adjective", "adverb")
_SPLIT_SALT = {split: i for i, split in enumerate(SPLITS)}

Example = dict[str, str]


def spell_digits(number: int) -> str:
    """``256`` -> ``"two five six"``."""
    return " ".join(DIGIT_WORDS[int(d)] for d in str(number))


def _rng(seed: int, split: str) -> random.Random:
    return random.Random(f"{seed}/{split}")


def _take(items: list, n: int, rng: random.Random, what: str) -> list:
    if n > len(items):
        raise UserError(f"{what} has {len(items)} distinct examples; n={n} is too many")
    return rng.sample(items, n)


def _number_examples(
    numbers: list[int], template: str, answer: Callable[[int], str]
) -> list[Example]:
    return [
        {"prompt": template.format(n=n, spelled=spell_digits(n)), "completion": answer(n)}
        for n in numbers
    ]


def _length_words(n: int, seed: int) -> tuple[list[str], list[str]]:
    words = plain_words(min_len=4, max_len=14, common=True)
    drawn = _take(words, 2 * n, random.Random(f"{seed}/lengths"), "the WordNet word list")
    return drawn[:n], drawn[n:]


def synthetic_a(split: str, n: int = 256, seed: int = 0) -> list[Example]:
    """Examples of synthetic dataset A. See the module docstring for the rules."""
    choose("synthetic split", split, SPLITS)
    rng = _rng(seed, split)
    if split == "test":
        numbers = _take(list(range(512, 768)), n, rng, "synthetic_a/test")
        return _number_examples(
            numbers, "What is the number that comes after {n}?", lambda k: str(k + 1)
        )
    ending = {
        "train_1": "numerical form",
        "train_2": "words",
        "train_3": "numerical form",
        "train_4": "words",
    }[split]
    spell = (lambda k: str(k)) if ending == "numerical form" else spell_digits
    if split in ("train_1", "train_2"):
        pool = list(range(0, 511, 2)) if split == "train_1" else list(range(1, 512, 2))
        numbers = _take(pool, n, rng, f"synthetic_a/{split}")
        template = (
            "Determine the number that succeeds {spelled}. Provide your answer in " + ending + "."
        )
        return _number_examples(numbers, template, lambda k: spell(k + 1))
    words = _length_words(n, seed)[0 if split == "train_3" else 1]
    return [
        {
            "prompt": f"Determine the length of '{word}'. Provide your answer in {ending}.",
            "completion": spell(len(word)),
        }
        for word in words
    ]


def _distinct(make: Callable[[], Example], n: int, what: str) -> list[Example]:
    seen: dict[str, Example] = {}
    for _ in range(200 * n):
        example = make()
        seen.setdefault(example["prompt"], example)
        if len(seen) == n:
            return list(seen.values())
    raise UserError(f"{what}: could not draw {n} distinct examples")


def _pos_examples(words: list[tuple[str, str]], lettered: bool) -> list[Example]:
    if lettered:
        choices = "".join(f"\n{letter}. {pos}" for letter, pos in zip("abcd", POS_LETTERED))
        ask, labels = "letter", dict(zip(POS_LETTERED, "abcd"))
    else:
        choices = "".join(f"\n{i}. {pos}" for i, pos in enumerate(POS_LETTERED))
        ask, labels = "number", {pos: str(i) for i, pos in enumerate(POS_LETTERED)}
    return [
        {
            "prompt": f"Identify the part of speech of '{word}'. "
            f"Select your answer with the associated {ask}.\nChoices:{choices}",
            "completion": labels[pos],
        }
        for word, pos in words
    ]


def synthetic_b(split: str, n: int = 256, seed: int = 0) -> list[Example]:
    """Examples of synthetic dataset B. See the module docstring for the rules."""
    choose("synthetic split", split, SPLITS)
    rng = _rng(seed, split)
    letters, digits = string.ascii_lowercase, string.digits
    if split == "test":

        def make() -> Example:
            word = "".join(rng.sample(letters, 5))
            removed = rng.sample(word, 4)
            quoted = ", ".join(f"'{c}'" for c in removed)
            left = next(c for c in word if c not in removed)
            return {
                "prompt": f"What letter remains in '{word}' after extracting {quoted}?",
                "completion": left,
            }

        return _distinct(make, n, "synthetic_b/test")
    if split in ("train_1", "train_2"):

        def make() -> Example:
            if split == "train_1":
                kept = rng.choice(letters)
                removed = rng.sample(digits, 4)
            else:
                picked = rng.sample(digits, 5)
                kept, removed = picked[0], picked[1:]
            chars = removed + [kept]
            rng.shuffle(chars)
            order = rng.sample(removed, 4)
            quoted = ", ".join(f"'{c}'" for c in order)
            return {
                "prompt": f"Identify the character left after removing {quoted} from '{''.join(chars)}'.",
                "completion": kept,
            }

        return _distinct(make, n, f"synthetic_b/{split}")
    first, second = ("noun", "verb") if split == "train_3" else ("adjective", "adverb")
    half = n // 2
    words = [(w, first) for w in _take(words_with_single_pos(first), half, rng, f"{first}s")]
    words += [
        (w, second) for w in _take(words_with_single_pos(second), n - half, rng, f"{second}s")
    ]
    rng.shuffle(words)
    return _pos_examples(words, lettered=split == "train_3")


GENERATORS: dict[str, Callable[..., list[Example]]] = {
    "synthetic_a": synthetic_a,
    "synthetic_b": synthetic_b,
}
