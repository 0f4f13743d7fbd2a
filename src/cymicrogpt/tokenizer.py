"""Character-level tokenizer: each distinct character is a token, plus one BOS token."""
from __future__ import annotations

from typing import Iterable, Sequence


class Tokenizer:
    """Token ids 0..len(chars)-1 are the sorted characters; id len(chars) is BOS.

    BOS ("beginning of sequence") marks both ends of every document, as in microgpt.
    """

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars):
            raise ValueError("tokenizer characters must be distinct")
        self.chars = chars
        self.bos = len(chars)
        self.vocab_size = len(chars) + 1
        self._ids = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def from_docs(cls, docs: Iterable[str]) -> "Tokenizer":
        return cls("".join(sorted(set("".join(docs)))))

    def encode(self, doc: str) -> list[int]:
        """[BOS, ids of doc's characters..., BOS]."""
        try:
            # (once per training step: map builds no comprehension frame; a missing character
            # still raises KeyError)
            return [self.bos, *map(self._ids.__getitem__, doc), self.bos]
        except KeyError as exc:
            raise ValueError(f"character {exc.args[0]!r} is not in the vocabulary") from None

    def encode_all(self, docs: Sequence[str]) -> list[list[int]]:
        """encode() of every document; ValueError naming the first document that has a
        character outside the vocabulary, and that character."""
        encoded = []
        for i, doc in enumerate(docs):
            try:
                encoded.append(self.encode(doc))
            except ValueError as exc:
                shown = doc if len(doc) <= 40 else doc[:40] + "..."
                raise ValueError(f"document {i} ({shown!r}): {exc} (the model's characters: "
                                 f"{self.chars[:100]!r}{'...' if len(self.chars) > 100 else ''})") from None
        return encoded

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i] for i in ids)
