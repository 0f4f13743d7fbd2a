"""Character-level tokenizer: each distinct character is a token, plus one BOS token.

Encoding runs once per training step, so an ASCII document (names.txt's all are) is
encoded in C, as bytes: ``bytes.translate`` maps each of its UTF-8 bytes to its
character's id, and every other byte to 255, which no id below 255 can be; a document
with a 255 goes to the character-by-character path (which raises, naming a character
outside the vocabulary).  The two paths give the same ids; the bytes path takes about
half the instructions for a name.
"""
from __future__ import annotations

from typing import Iterable, Sequence

NOT_AN_ID = 255  # the bytes path's mark for a character outside the vocabulary


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
        # ASCII byte -> its character's id, else 255 (a byte of a longer UTF-8 sequence too);
        # only ids below 255 fit: a larger vocabulary's documents all take the characters' path
        byte_ids = self._ids if len(chars) < NOT_AN_ID else {}
        self._byte_ids = bytes(byte_ids.get(chr(byte), NOT_AN_ID) if byte < 128 else NOT_AN_ID for byte in range(256))

    @classmethod
    def from_docs(cls, docs: Iterable[str]) -> "Tokenizer":
        return cls("".join(sorted(set("".join(docs)))))

    def encode(self, doc: str) -> list[int]:
        """[BOS, ids of doc's characters..., BOS]."""
        try:
            ids = doc.encode().translate(self._byte_ids)  # UTF-8: the codec Python finds fastest
        except (UnicodeEncodeError, AttributeError):  # a lone surrogate, or not a str: as the
            return self._encode_characters(doc)  # characters' path says
        if NOT_AN_ID in ids:  # not ASCII, or a character outside the vocabulary
            return self._encode_characters(doc)
        return [self.bos, *ids, self.bos]

    def _encode_characters(self, doc: str) -> list[int]:
        try:
            # (map builds no comprehension frame; a missing character raises KeyError)
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
