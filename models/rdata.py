"""A small reader for R's lazy-load databases (data/Rdata.rdx + Rdata.rdb), no R required.

The .rdx index is a gzip'd XDR serialisation of a list whose `variables` entry maps each
object name to (offset, length) in the .rdb file; each .rdb record is a 4-byte big-endian
uncompressed length followed by a zlib stream of one XDR-serialised object. Only the types
that data packages of text use are decoded: vectors, lists, pairlists, symbols, strings.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

NILVALUE_SXP = 254
REF_SXP = 255
GLOBALENV_SXP = 253
EMPTYENV_SXP = 242
BASEENV_SXP = 241
MISSINGARG_SXP = 251
BASENAMESPACE_SXP = 247

SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP = 1, 2, 9, 10, 13, 14, 16, 19
NA_INTEGER = -(2**31)


class RDataError(ValueError):
    pass


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.refs: list = []

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise RDataError("truncated R serialisation")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def header(self) -> None:
        if self.take(2) != b"X\n":
            raise RDataError("not an XDR R serialisation")
        version = self.int()
        self.int()  # writer's R version
        self.int()  # minimal reader version
        if version == 3:
            self.take(self.int())  # native encoding name
        elif version != 2:
            raise RDataError(f"unsupported R serialisation version {version}")

    def item(self):
        flags = self.int()
        kind = flags & 0xFF
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind in (NILVALUE_SXP, GLOBALENV_SXP, EMPTYENV_SXP, BASEENV_SXP, MISSINGARG_SXP, BASENAMESPACE_SXP):
            return None
        if kind == REF_SXP:
            index = flags >> 8 or self.int()
            return self.refs[index - 1]
        if kind == SYMSXP:
            name = self.item()
            self.refs.append(name)
            return name
        if kind == CHARSXP:
            n = self.int()
            return None if n == -1 else self.take(n).decode("utf-8", errors="replace")
        if kind == LISTSXP:
            out: dict = {}
            position = 0
            while kind == LISTSXP:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else str(position)
                out[tag] = self.item()
                position += 1
                flags = self.int()
                kind, has_attr, has_tag = flags & 0xFF, bool(flags & (1 << 9)), bool(flags & (1 << 10))
            if kind != NILVALUE_SXP:
                raise RDataError("malformed pairlist")
            return out
        if kind in (STRSXP, VECSXP, INTSXP, LGLSXP, REALSXP):
            n = self.int()
            if kind == STRSXP or kind == VECSXP:
                value = [self.item() for _ in range(n)]
            elif kind == REALSXP:
                value = list(struct.unpack(f">{n}d", self.take(8 * n)))
            else:
                value = list(struct.unpack(f">{n}i", self.take(4 * n)))
            if has_attr:
                attrs = self.item()
                if kind == VECSXP and isinstance(attrs, dict) and "names" in attrs:
                    return dict(zip(attrs["names"], value))
            return value
        raise RDataError(f"unsupported R object type {kind}")


def _unserialize(data: bytes):
    reader = _Reader(data)
    reader.header()
    return reader.item()


def read_lazyload(data_dir: str | Path) -> dict[str, object]:
    """Every object of a package's data/Rdata.{rdx,rdb}, by name."""
    data_dir = Path(data_dir)
    index = _unserialize(gzip.decompress((data_dir / "Rdata.rdx").read_bytes()))
    if not isinstance(index, dict) or "variables" not in index:
        raise RDataError("Rdata.rdx has no variables index")
    blob = (data_dir / "Rdata.rdb").read_bytes()
    objects = {}
    for name, (offset, length) in index["variables"].items():
        record = blob[offset : offset + length]
        expected = struct.unpack(">I", record[:4])[0]
        raw = zlib.decompress(record[4:])
        if len(raw) != expected:
            raise RDataError(f"record {name!r} decompressed to {len(raw)} bytes, expected {expected}")
        objects[name] = _unserialize(raw)
    return objects
