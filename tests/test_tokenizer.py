"""Tokenizer.encode's two paths (tokenizer.py): ASCII documents as bytes in C, any other
character by character; they must give the same ids and raise the same errors."""
from __future__ import annotations

import re

import pytest

from cymicrogpt.tokenizer import Tokenizer

VOCABULARIES = {
    "names": "abcdefghijklmnopqrstuvwxyz",
    "latin-1": "\x00\t\n abzéÿ",
    "mixed": "abcé€ő\U0001f600",
    "past Latin-1 only": "€ő\U0001f600",
    "256 characters": "".join(map(chr, range(256))),  # ids past 254: no bytes path
    "255 characters": "".join(map(chr, range(255))),  # the largest the bytes path serves
    "255 characters but one": "".join(map(chr, range(254))) + "\xff",
}


def by_characters(tokenizer: Tokenizer, doc: str) -> list[int]:
    return [tokenizer.bos, *(tokenizer.chars.index(ch) for ch in doc), tokenizer.bos]


@pytest.mark.parametrize("name", VOCABULARIES)
def test_every_document_of_the_vocabulary_encodes_to_its_ids(name):
    chars = VOCABULARIES[name]
    tokenizer = Tokenizer("".join(sorted(chars)))
    docs = ["", chars, chars[::-1], chars[:1] * 40, chars[-1], *chars]
    for doc in docs:
        assert tokenizer.encode(doc) == by_characters(tokenizer, doc)
        assert all(type(token) is int for token in tokenizer.encode(doc))
    assert tokenizer.decode(tokenizer.encode(chars)[1:-1]) == chars


@pytest.mark.parametrize("name", VOCABULARIES)
@pytest.mark.parametrize("foreign", ["Z", "\x7f", "\xe8", "\xfe", "\xff", "\u0151", "\U0001f601", "\ud800"])
def test_a_character_outside_the_vocabulary_is_named_on_either_path(name, foreign):
    tokenizer = Tokenizer("".join(sorted(VOCABULARIES[name])))
    if foreign in tokenizer.chars:
        pytest.skip("in this vocabulary")
    known = tokenizer.chars[0]
    for doc in (foreign, known + foreign, foreign + known, known * 10 + foreign):
        with pytest.raises(ValueError, match=f"^character {re.escape(repr(foreign))} is not in the vocabulary$"):
            tokenizer.encode(doc)


def test_a_document_that_is_not_a_string_is_refused_as_before():
    tokenizer = Tokenizer("ab")
    with pytest.raises(ValueError, match="^character 97 is not in the vocabulary$"):
        tokenizer.encode(b"a")
    with pytest.raises(TypeError):
        tokenizer.encode(None)
