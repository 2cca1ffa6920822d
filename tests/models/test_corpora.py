from pathlib import Path

import pytest

from models.corpora import AUSTEN_DIR, austen, companion_paths, load_corpus_files, python_stdlib, write_corpus
from models.errors import RnnscopeError
from models.rdata import read_lazyload


def _no_shared_documents(train: str, val: str, min_len: int = 400):
    """No long validation paragraph appears verbatim in training."""
    paragraphs = [p for p in val.split("\n\n") if len(p) >= min_len]
    assert paragraphs
    assert not any(p in train for p in paragraphs[:50])


def test_python_stdlib_split_is_deterministic_and_disjoint(tmp_path):
    a, b = python_stdlib(), python_stdlib()
    assert a.train == b.train and a.val == b.val
    assert a.val_docs > 0 and a.train_docs > 10 * a.val_docs
    assert "def " in a.train and "def " in a.val
    _no_shared_documents(a.train, a.val)


def test_stdlib_excludes_tests_and_third_party_code():
    from models.corpora import _excluded

    assert _excluded("test/test_os.py") and _excluded("unittest/test/test_case.py")
    assert _excluded("ctypes/test_x.py") and _excluded("site-packages/torch/nn.py")
    assert not _excluded("os.py") and not _excluded("json/decoder.py")
    corpus = python_stdlib()
    assert "class OsTests(" not in corpus.train  # from test/test_os.py


@pytest.mark.skipif(not (AUSTEN_DIR / "Rdata.rdb").is_file(), reason="apt-get install r-cran-janeaustenr")
def test_austen_reads_six_novels_and_holds_out_their_ends(tmp_path):
    objects = read_lazyload(AUSTEN_DIR)
    assert {"emma", "persuasion", "prideprejudice"} <= set(objects)
    corpus = austen()
    assert corpus.train_docs == corpus.val_docs == 6
    assert 0.04 < len(corpus.val) / (len(corpus.train) + len(corpus.val)) < 0.06
    assert corpus.train.startswith("SENSE AND SENSIBILITY")
    _no_shared_documents(corpus.train, corpus.val, min_len=300)
    meta = write_corpus(corpus, tmp_path / "austen.txt")
    train, val, loaded = load_corpus_files(tmp_path / "austen.txt")
    assert train == corpus.train and val == corpus.val and loaded["name"] == "austen"
    assert meta["train_sha256"] == loaded["train_sha256"]


def test_missing_source_says_how_to_install(tmp_path):
    with pytest.raises(RnnscopeError, match="apt-get install r-cran-janeaustenr"):
        austen(tmp_path)


def test_plain_text_file_is_split_at_its_tail(tmp_path):
    p = tmp_path / "mine.txt"
    p.write_text("abcdefghij" * 10)
    train, val, meta = load_corpus_files(p)
    assert train + val == "abcdefghij" * 10 and len(val) == 5
    assert companion_paths(p) == (tmp_path / "mine.val.txt", tmp_path / "mine.meta.json")
