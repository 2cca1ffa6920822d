"""Held-out text for measurements that must not be made on training text (gate saturation).

A fresh clone has no data/ folder, so the text is rebuilt the way `rnnscope corpus` builds it
(models.corpora: the same deterministic split from the same installed source) and kept for the
life of the process. The rebuilt training split is checked against the sha256 on the model card,
so the page can say whether this is exactly the text the model never saw. Where the source is
not installed, a held-out file under data/ (written by `rnnscope corpus`) is used instead;
with neither, NoHeldOut says why and how to fix it: never a silent stand-in text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from models import corpora
from models.corpora import Corpus
from models.errors import RnnscopeError

# corpus name (model card) -> the held-out file `rnnscope corpus NAME --out data/FILE` writes (README)
VAL_FILES = {"austen": "austen.val.txt", "python-stdlib": "python.val.txt"}


class NoHeldOut(Exception):
    """No held-out text for this corpus here; `reason` is a sentence for a person, with the fix.
    `installable`: the corpus is known and its source could be installed (not the user's input)."""

    def __init__(self, reason: str, installable: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.installable = installable


@dataclass(frozen=True)
class HeldOut:
    corpus: str
    text: str  # the first `chars` characters of the held-out split
    source: str  # a sentence for the page: which text, from where
    total: int  # characters in the whole held-out split (0: unknown)


@dataclass(frozen=True)
class _Head:
    text_head: str
    split: str
    val_chars: int


class HeldOutTexts:
    """The first `chars` held-out characters per corpus, built once per process (a lock per corpus,
    so concurrent first requests build once). Failures are not remembered: installing the source
    later works without a restart."""

    def __init__(self, data_dir: Path, chars: int,
                 builders: Mapping[str, Callable[[], Corpus]] | None = None):
        self.data_dir = data_dir
        self.chars = chars
        self.builders = dict(corpora.BUILDERS if builders is None else builders)
        self._built: dict[str, tuple[_Head, str]] = {}  # corpus -> (its held-out head only, train sha256)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.builds = 0  # corpora actually built (for tests)

    def get(self, corpus: str | None, card_sha256: str | None = None) -> HeldOut:
        if not corpus:
            raise NoHeldOut("its model card names no training corpus, so there is no held-out text for it")
        build = self.builders.get(corpus)
        if build is None:
            raise NoHeldOut(f"its model card names corpus {corpus!r}, which rnnscope cannot rebuild "
                            f"(it knows {', '.join(self.builders)})")
        try:
            head, train_sha = self._build(corpus, build)
        except RnnscopeError as e:
            return self._from_file(corpus, str(e))
        n = len(head.text_head)
        same = card_sha256 is None or card_sha256 == train_sha
        check = ("its training split matches the model card's sha256, so the model never saw this text" if
                 card_sha256 else "the model card has no corpus sha256 to check the split against")
        if not same:
            check = ("its training split differs from the model card's sha256 (the source on this machine is "
                     "not the one the model was trained from), so a little of it may have been trained on")
        source = (f"the first {n:,} characters of the held-out {corpus} text, rebuilt from the installed source "
                  f"as `rnnscope corpus {corpus}` builds it — {head.split}; {check}")
        return HeldOut(corpus, head.text_head, source, head.val_chars)

    def _build(self, corpus: str, build: Callable[[], Corpus]) -> tuple[_Head, str]:
        with self._guard:
            lock = self._locks.setdefault(corpus, threading.Lock())
        with lock:
            hit = self._built.get(corpus)
            if hit is None:
                full = build()
                self.builds += 1
                hit = (_Head(full.val[:self.chars], full.split, len(full.val)), corpora.sha256_text(full.train))
                self._built[corpus] = hit  # the head only: the whole corpus (megabytes) is dropped
            return hit

    def _from_file(self, corpus: str, why: str) -> HeldOut:
        fname = VAL_FILES.get(corpus)
        path = self.data_dir / fname if fname else None
        if path is None or not path.is_file():
            raise NoHeldOut(f"the held-out {corpus} text cannot be rebuilt here: {why}", installable=True)
        try:
            with path.open(encoding="utf-8", errors="replace") as f:
                text = f.read(self.chars)
        except OSError as e:
            raise NoHeldOut(f"the held-out text {path.name} cannot be read ({e.strerror or e}), and the "
                            f"{corpus} source is not usable: {why}", installable=True) from None
        if not text:
            raise NoHeldOut(f"the held-out text data/{path.name} is empty, and the {corpus} source is not "
                            f"usable: {why}", installable=True)
        source = (f"the first {len(text):,} characters of data/{path.name} (held-out {corpus} text written by "
                  f"`rnnscope corpus`; the source itself is not usable here: {why})")
        return HeldOut(corpus, text, source, 0)

