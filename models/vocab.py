"""Character vocabulary: JSON round-trip and an explicit unknown id for unseen characters."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

UNK = "\ufffd"  # the replacement character stands for every character the model never saw


@dataclass
class CharVocab:
    chars: list[str]  # index 0 is always UNK
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        if not self.chars or self.chars[0] != UNK:
            raise ValueError("a vocabulary's first entry must be the unknown character")
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("vocabulary has duplicate characters")
        self._index = {ch: i for i, ch in enumerate(self.chars)}

    unk_id = 0

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        return cls([UNK] + sorted(set(text) - {UNK}))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, ch: str) -> bool:
        return ch in self._index

    def encode(self, text: str) -> list[int]:
        get = self._index.get
        return [get(ch, 0) for ch in text]

    def encode_tensor(self, text: str) -> torch.Tensor:
        return torch.tensor(self.encode(text), dtype=torch.long)

    def unknown_positions(self, text: str) -> list[int]:
        """Positions whose character the model never saw (they were mapped to the unknown id)."""
        return [t for t, ch in enumerate(text) if ch not in self._index or ch == UNK]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_json(self) -> list[str]:
        return list(self.chars)

    @classmethod
    def from_json(cls, data) -> "CharVocab":
        if not isinstance(data, list) or not all(isinstance(c, str) and len(c) == 1 for c in data):
            raise ValueError("vocabulary must be a JSON list of single characters")
        return cls(list(data))
