"""Training corpora built from sources already on the machine, with deterministic splits.

A corpus is three files: FILE (training text), its validation twin (FILE with `.val` before
the suffix) and a `.meta.json` card (name, split rule, document counts, sha256 of both texts).
The split is by document, so no validation text ever appears in training.
"""

from __future__ import annotations

import hashlib
import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from .errors import RnnscopeError
from .rdata import RDataError, read_lazyload

AUSTEN_DIR = Path("/usr/lib/R/site-library/janeaustenr/data")
AUSTEN_NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
AUSTEN_VAL_FRACTION = 0.05
PYTHON_VAL_PERCENT = 5
DOC_SEPARATOR = "\n\n"


@dataclass
class Corpus:
    name: str
    train: str
    val: str
    split: str  # a sentence saying how train and validation were separated
    train_docs: int
    val_docs: int

    @classmethod
    def of_documents(cls, name: str, split: str, train: list[str], val: list[str]) -> Corpus:
        """The training and the validation documents, each set joined with DOC_SEPARATOR."""
        return cls(name=name, train=DOC_SEPARATOR.join(train), val=DOC_SEPARATOR.join(val), split=split,
                   train_docs=len(train), val_docs=len(val))


def companion_paths(train_file: str | Path) -> tuple[Path, Path]:
    """(validation file, meta file) that sit beside a corpus's training file."""
    p = Path(train_file)
    return p.with_name(f"{p.stem}.val{p.suffix}"), p.with_name(f"{p.stem}.meta.json")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def austen(data_dir: Path = AUSTEN_DIR) -> Corpus:
    """Six novels; the last 5% of each novel (cut at a paragraph break) is held out."""
    if not (data_dir / "Rdata.rdb").is_file():
        raise RnnscopeError(
            f"Jane Austen's novels are not installed ({data_dir}/Rdata.rdb missing): "
            "run `apt-get install r-cran-janeaustenr` (Debian) and try again"
        )
    try:
        objects = read_lazyload(data_dir)
    except (RDataError, OSError, EOFError) as e:
        raise RnnscopeError(f"cannot read {data_dir}/Rdata.rdb ({e}); reinstall r-cran-janeaustenr") from None
    train_parts, val_parts = [], []
    for name in AUSTEN_NOVELS:
        lines = objects.get(name)
        if not isinstance(lines, list):
            raise RnnscopeError(f"novel {name!r} not found in {data_dir}; reinstall r-cran-janeaustenr")
        text = "\n".join(line or "" for line in lines).strip() + "\n"
        cut = _paragraph_cut(text, 1 - AUSTEN_VAL_FRACTION)
        train_parts.append(text[:cut])
        val_parts.append(text[cut:])
    split = f"last {AUSTEN_VAL_FRACTION:.0%} of each of the six novels (cut at a paragraph break) held out"
    return Corpus.of_documents("austen", split, train_parts, val_parts)


def _paragraph_cut(text: str, fraction: float) -> int:
    at = int(len(text) * fraction)
    blank = text.find("\n\n", at)
    return len(text) if blank < 0 else blank + 2


def python_stdlib(root: Path | None = None) -> Corpus:
    """The running interpreter's stdlib .py files, tests excluded; ~5% of files (by path hash) held out."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise RnnscopeError(f"the Python standard library was not found at {root}; install python3 (apt-get install python3)")
    train_parts, val_parts = [], []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if _excluded(rel):
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if not source.strip():
            continue
        bucket = int(hashlib.sha256(rel.encode()).hexdigest(), 16) % 100
        (val_parts if bucket < PYTHON_VAL_PERCENT else train_parts).append(source.rstrip() + "\n")
    if not train_parts or not val_parts:
        raise RnnscopeError(f"no usable .py files under {root}; install python3 (apt-get install python3)")
    split = f"files whose path hashes (sha256 mod 100) below {PYTHON_VAL_PERCENT} held out"
    return Corpus.of_documents("python-stdlib", split, train_parts, val_parts)


def _excluded(rel: str) -> bool:
    parts = rel.split("/")
    if parts[0] in ("site-packages", "dist-packages", "lib2to3", "idlelib", "turtledemo"):
        return True
    name = parts[-1]
    return any(p in ("test", "tests") for p in parts[:-1]) or name.startswith("test_") or name == "__phello__"


BUILDERS = {"austen": austen, "python-stdlib": python_stdlib}


def build(name: str) -> Corpus:
    if name not in BUILDERS:
        raise RnnscopeError(f"unknown corpus {name!r}: choose one of {', '.join(BUILDERS)}")
    return BUILDERS[name]()


def write_corpus(corpus: Corpus, out: str | Path) -> dict:
    out = Path(out)
    val_path, meta_path = companion_paths(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "name": corpus.name,
        "split": corpus.split,
        "train_docs": corpus.train_docs,
        "val_docs": corpus.val_docs,
        "train_chars": len(corpus.train),
        "val_chars": len(corpus.val),
        "train_sha256": sha256_text(corpus.train),
        "val_sha256": sha256_text(corpus.val),
    }
    out.write_text(corpus.train, encoding="utf-8")
    val_path.write_text(corpus.val, encoding="utf-8")
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def read_text_file(path: str | Path, what: str = "data file") -> str:
    """UTF-8 text, or one clear error naming the file and the first bad byte."""
    path = Path(path)
    if not path.is_file():
        raise RnnscopeError(f"{what} {path} does not exist; build one with `rnnscope corpus austen --out {path}`")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RnnscopeError(f"{what} {path} is not UTF-8 (bad byte at offset {e.start}); convert it with iconv") from None
    if not text:
        raise RnnscopeError(f"{what} {path} is empty")
    return text


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RnnscopeError(f"corpus card {path} is not valid JSON ({e}); rebuild it with `rnnscope corpus` "
                            "or delete it") from None
    if not isinstance(meta, dict):
        raise RnnscopeError(f"corpus card {path} is not a JSON object; rebuild it with `rnnscope corpus` or delete it")
    return meta


def load_corpus_files(train_file: str | Path, fallback_val_fraction: float = 0.05) -> tuple[str, str, dict]:
    """(train text, validation text, meta). A plain text file without companions is split at its tail."""
    train = read_text_file(train_file)
    val_path, meta_path = companion_paths(train_file)
    if val_path.is_file():
        val = read_text_file(val_path, "validation file")
        meta = _read_meta(meta_path) if meta_path.is_file() else {}
    else:
        cut = int(len(train) * (1 - fallback_val_fraction))
        train, val = train[:cut], train[cut:]
        meta = {"split": f"last {fallback_val_fraction:.0%} of the file held out"}
    if len(train) < 2:
        raise RnnscopeError(f"data file {train_file} is too short to train on (need at least 2 characters)")
    meta.setdefault("name", Path(train_file).stem)
    meta.setdefault("train_sha256", sha256_text(train))
    return train, val, meta
