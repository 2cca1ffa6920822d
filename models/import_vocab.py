"""The vocabulary of a model trained elsewhere: which character each row of its weights stands for.

Three spellings are accepted, told apart by the file name:
- `*.json` holding a list of characters in index order (`itos`), an object character -> index
  (`stoi`), or an object index -> character (`itos` saved as a dict: {"0": "\\n", ...});
- any other file is the training corpus, and the vocabulary is the sorted set of its characters,
  the convention of most char-RNN tutorials (`chars = sorted(list(set(text)))`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import RnnscopeError
from .vocab import UNK, CharVocab


@dataclass(frozen=True)
class SourceVocab:
    chars: list[str]  # the source model's index order: row i of its weights is chars[i]
    kind: str  # "list", "dict" or "corpus"
    note: str  # how the order was read, for the model card

    def __len__(self) -> int:
        return len(self.chars)

    def to_rnnscope(self) -> tuple[CharVocab, list[int | None]]:
        """rnnscope's vocabulary (unknown character first) and, per its index, the source row (None: no row).

        The source model has no unknown character unless it had U+FFFD itself; rnnscope's is added at
        index 0 and every source character keeps its place after it.
        """
        rest = [i for i, ch in enumerate(self.chars) if ch != UNK]
        unk_row = self.chars.index(UNK) if UNK in self.chars else None
        rows = [unk_row] + rest
        return CharVocab([UNK] + [self.chars[i] for i in rest]), rows


def read_user_text(path: Path, label: str) -> str:
    """A file named on the command line, as UTF-8 text; each way it can fail is one message naming it by `label`."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RnnscopeError(f"{label} does not exist") from None
    except UnicodeDecodeError as e:
        raise RnnscopeError(f"{label} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise RnnscopeError(f"cannot read {label}: {e.strerror or e}") from None


def read_vocab(path: str | Path) -> SourceVocab:
    path = Path(path)
    raw = read_user_text(path, f"vocabulary file {path}")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise RnnscopeError(f"vocabulary file {path} is not valid JSON ({e.msg} at line {e.lineno} column "
                                f"{e.colno}); a .json vocabulary is a list of characters or an object "
                                "character -> index; any other file is read as the training corpus") from None
        return _from_json(data, path)
    chars = sorted(set(raw))
    if not chars:
        raise RnnscopeError(f"vocabulary file {path} is empty: give the training corpus, or a .json list of characters")
    return SourceVocab(chars, "corpus", f"vocabulary: the sorted set of the {len(chars)} characters of the corpus "
                                        f"{path.name} (the usual char-RNN convention); if the model was trained with "
                                        "another order its predictions are scrambled: import it with a .json list")


def _from_json(data, path: Path) -> SourceVocab:
    if isinstance(data, list):
        for i, ch in enumerate(data):
            _check_char(ch, f"entry {i}", path)
        _no_duplicates(data, path)
        if not data:
            raise RnnscopeError(f"vocabulary file {path} is an empty list")
        return SourceVocab(list(data), "list", f"vocabulary: the JSON list {path.name}, in index order")
    if not isinstance(data, dict) or not data:
        raise RnnscopeError(f"vocabulary file {path} holds {type(data).__name__ if data != {} else 'an empty object'}: "
                            "expected a list of characters or an object character -> index")
    values = list(data.values())
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):  # char -> index (stoi)
        by_index = {}
        for ch, i in data.items():
            _check_char(ch, f"key {ch!r}", path)
            if i in by_index:
                raise RnnscopeError(f"vocabulary file {path}: {by_index[i]!r} and {ch!r} both have index {i}")
            by_index[i] = ch
        kind = "character -> index"
    elif all(isinstance(v, str) for v in values) and all(k.isdigit() for k in data):  # index -> char (itos)
        by_index = {int(k): v for k, v in data.items()}
        for i, ch in by_index.items():
            _check_char(ch, f"index {i}", path)
        _no_duplicates(list(by_index.values()), path)
        kind = "index -> character"
    else:
        raise RnnscopeError(f"vocabulary file {path}: an object must map each character to its index (int), or each "
                            "index (\"0\", \"1\", ...) to its character")
    missing = sorted(set(range(len(by_index))) - set(by_index))
    if missing:
        raise RnnscopeError(f"vocabulary file {path}: indices must run 0..{len(by_index) - 1} without gaps; "
                            f"{'index' if len(missing) == 1 else 'indices'} {', '.join(map(str, missing[:5]))} "
                            f"{'is' if len(missing) == 1 else 'are'} missing")
    chars = [by_index[i] for i in range(len(by_index))]
    return SourceVocab(chars, "dict", f"vocabulary: the JSON object {path.name} ({kind})")


def _check_char(ch, where: str, path: Path) -> None:
    if not isinstance(ch, str) or len(ch) != 1:
        raise RnnscopeError(f"vocabulary file {path}: {where} is {ch!r}, not one character (rnnscope models read "
                            "single characters; special tokens such as '<pad>' cannot be imported)")


def _no_duplicates(chars: list[str], path: Path) -> None:
    seen: dict[str, int] = {}
    for i, ch in enumerate(chars):
        if ch in seen:
            raise RnnscopeError(f"vocabulary file {path}: {ch!r} appears twice (indices {seen[ch]} and {i})")
        seen[ch] = i
