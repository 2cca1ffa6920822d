"""Reading a state_dict saved elsewhere and placing its tensors: embedding -> recurrent stack -> head.

Nothing here runs code from the file: `.pt`/`.pth` go through torch.load(weights_only=True), and
`.safetensors` holds nothing but tensors. Tensors are placed by shape first and by name only to
break ties, so `encoder.weight`/`decoder.weight` (PyTorch's word_language_model), `embedding`/`fc`
and `emb`/`lstm`/`out` all import without help; what cannot be placed is an error that names the
candidates, and `--map OLD=NEW` renames keys (to `embed.weight`, `head.weight`, `head.bias`, or
`rnn.weight_ih_l0`-style names) so that it can.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import RnnscopeError

GATES = {4: "lstm", 3: "gru", 1: "rnn"}  # rows of weight_hh / H -> cell
EMBED, HEAD, HEAD_BIAS = "embed.weight", "head.weight", "head.bias"  # names --map can give
# Module names that break a tie between same-shaped candidates (matched inside the module's name).
HEAD_HINTS = ("head", "fc", "decoder", "out", "linear", "proj", "classifier", "logit", "dense")
EMBED_HINTS = ("emb", "encoder", "token", "wte", "lookup")
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")  # where training scripts nest it
RECURRENT = re.compile(r"^(?P<prefix>(?:.*\.)?)(?P<kind>weight|bias)_(?P<part>ih|hh|hr)_l(?P<k>\d+)(?P<rev>_reverse)?$")
SAVE_HINT = "in the code that trained it, run torch.save(model.state_dict(), 'model.pt') and import that file"


@dataclass(frozen=True)
class Source:
    tensors: dict[str, torch.Tensor]  # float32 where the file had floats
    sha256: str
    format: str  # "safetensors" or "torch state_dict"
    note: str = ""  # where in the file the state_dict was found, when it was nested


@dataclass(frozen=True)
class Layout:
    """Where each part of the model is in the (renamed) state_dict, and the sizes they imply."""

    cell: str
    nonlinearity: str
    n_layers: int
    hidden: int
    input_size: int  # columns of weight_ih_l0: the embedding width, or V for one-hot input
    vocab_size: int
    prefix: str  # the recurrent module's key prefix, e.g. "lstm." or "encoder.rnn."
    bias: bool  # the recurrent module has bias_ih/bias_hh
    embed_key: str | None  # None: one-hot input
    head_key: str
    head_bias_key: str | None

    def key(self, kind: str, k: int) -> str:
        """kind is weight_ih, weight_hh, bias_ih or bias_hh."""
        return f"{self.prefix}{kind}_l{k}"

    def describe(self) -> str:
        cell = "RNN (ReLU)" if self.nonlinearity == "relu" else "RNN (tanh)" if self.cell == "rnn" else self.cell.upper()
        inp = f"embedding {self.embed_key} ({self.vocab_size}, {self.input_size})" if self.embed_key else \
            f"one-hot input ({self.vocab_size} characters)"
        bias = "" if self.bias else " without biases"
        head = f"{self.head_key}" + (f" + {self.head_bias_key}" if self.head_bias_key else " (no bias)")
        return f"{inp} -> {self.n_layers}-layer {cell} {self.prefix}* of {self.hidden} units{bias} -> head {head}"


# ---- reading the file
def read_source(path: str | Path) -> Source:
    path = Path(path)
    if not path.is_file():
        raise RnnscopeError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise RnnscopeError(f"cannot read {path}: {e.strerror or e}") from None
    sha = hashlib.sha256(blob).hexdigest()
    if path.suffix.lower() == ".safetensors" or _looks_like_safetensors(blob):
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            tensors = load(blob)
        except (SafetensorError, ValueError, OSError) as e:
            raise RnnscopeError(f"{path} is not a readable safetensors file ({e})") from None
        return Source(_floats(tensors), sha, "safetensors")
    obj = _torch_load(path)
    tensors, note = _find_state_dict(obj, path)
    return Source(_floats(tensors), sha, "torch state_dict", note)


def _looks_like_safetensors(blob: bytes) -> bool:
    """An 8-byte little-endian header length, then a JSON header: what a .safetensors file starts with."""
    if len(blob) < 10 or blob[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(blob[:8], "little") <= len(blob) - 8


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a file that is not its own
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
        if isinstance(e, pickle.UnpicklingError) and found:  # a class or function the file wants to call
            raise RnnscopeError(f"{path} holds a pickled Python object ({found.group(1)}), not a state_dict; loading it "
                                f"would run its code, which rnnscope never does: {SAVE_HINT}") from None
        why = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(e))
        first = why.group(1) if why else str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise RnnscopeError(f"{path} is not a PyTorch state_dict file torch.load can read ({first}); give a .pt/.pth "
                            "saved with torch.save(model.state_dict(), ...) or a .safetensors file") from None


def _find_state_dict(obj, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state_dict itself, or the one a training script nested in its checkpoint dict."""
    if isinstance(obj, torch.nn.Module):  # only reachable if torch ever allow-lists modules
        raise RnnscopeError(f"{path} holds a whole nn.Module, not a state_dict: {SAVE_HINT}")
    if not isinstance(obj, Mapping):
        raise RnnscopeError(f"{path} holds a {type(obj).__name__}, not a state_dict (a dict of tensors): {SAVE_HINT}")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}, ""
    nested = [k for k in obj if isinstance(obj[k], Mapping) and obj[k]
              and all(isinstance(v, torch.Tensor) for v in obj[k].values())
              and any(RECURRENT.match(str(n)) for n in obj[k])]
    if len(nested) == 1:
        return {str(k): v for k, v in obj[nested[0]].items()}, f"state_dict read from the file's {nested[0]!r} entry"
    named = [k for k in nested if k in STATE_DICT_KEYS]
    if len(named) == 1:
        return {str(k): v for k, v in obj[named[0]].items()}, f"state_dict read from the file's {named[0]!r} entry"
    keys = ", ".join(repr(k) for k in list(obj)[:8]) or "none"
    raise RnnscopeError(f"{path} holds a dict that is not a state_dict (its keys: {keys}) and no single state_dict "
                        f"of a recurrent model inside it: {SAVE_HINT}")


def _floats(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().float() if v.is_floating_point() else v for k, v in tensors.items()}


# ---- --map OLD=NEW
def apply_maps(tensors: dict[str, torch.Tensor], maps: list[str]) -> dict[str, torch.Tensor]:
    """Rename keys: `OLD=NEW` renames one key; `OLD.=NEW.` (both ending in a dot) renames a prefix."""
    out = dict(tensors)
    for m in maps:
        old, eq, new = m.partition("=")
        if not eq or not old or not new:
            raise RnnscopeError(f"--map takes OLD=NEW (a key and its new name, or two prefixes ending in '.'), got {m!r}")
        if old.endswith("."):
            if not new.endswith("."):
                raise RnnscopeError(f"--map {m}: a prefix (ending in '.') renames to a prefix, e.g. {old}=rnn.")
            moved = {k: new + k[len(old):] for k in out if k.startswith(old)}
        else:
            moved = {old: new} if old in out else {}
        if not moved:
            raise RnnscopeError(f"--map {m}: no key {'starts with' if old.endswith('.') else 'is'} {old!r} "
                                f"(keys: {_list_keys(out)})")
        for k, n in moved.items():
            if n in out and n not in moved:
                raise RnnscopeError(f"--map {m}: {n!r} is already a key; map that one away first")
        renamed = {moved.get(k, k): v for k, v in out.items()}
        if len(renamed) != len(out):
            raise RnnscopeError(f"--map {m}: two keys would both be named {new!r}")
        out = renamed
    return out


# ---- placing the tensors
def recognise(tensors: dict[str, torch.Tensor], vocab_size: int, nonlinearity: str = "tanh") -> Layout:
    """Find embedding (or one-hot input), the recurrent stack and the head; refuse anything else."""
    prefix, ks = _recurrent_module(tensors)
    L = len(ks)
    w_hh0 = _matrix(tensors, f"{prefix}weight_hh_l0")
    rows, H = w_hh0.shape
    if rows % H or rows // H not in GATES:
        raise RnnscopeError(f"{prefix}weight_hh_l0 is {_shape(w_hh0)}: its rows are not 1, 3 or 4 times its {H} "
                            "columns, so it is not an nn.RNN, nn.GRU or nn.LSTM weight")
    cell = GATES[rows // H]
    if nonlinearity not in ("tanh", "relu"):
        raise RnnscopeError(f"--nonlinearity {nonlinearity!r}: choose tanh or relu")
    if nonlinearity == "relu" and cell != "rnn":
        raise RnnscopeError(f"--nonlinearity relu is for a vanilla RNN, but {prefix}weight_hh_l0 {_shape(w_hh0)} has "
                            f"{rows // H}x{H} rows: an {cell.upper()}, whose nonlinearities are fixed")
    I = _matrix(tensors, f"{prefix}weight_ih_l0").shape[1]
    bias = f"{prefix}bias_ih_l0" in tensors
    for k in range(L):
        _expect(tensors, f"{prefix}weight_ih_l{k}", (rows, I if k == 0 else H))
        _expect(tensors, f"{prefix}weight_hh_l{k}", (rows, H))
        for part in ("ih", "hh"):
            key = f"{prefix}bias_{part}_l{k}"
            if (key in tensors) != bias:
                raise RnnscopeError(f"{key} is {'missing' if bias else 'there'} but {prefix}bias_ih_l0 is "
                                    f"{'there' if bias else 'missing'}: a PyTorch module has biases in every layer or none")
            if bias:
                _expect(tensors, key, (rows,))
    used = {f"{prefix}{w}_l{k}" for k in range(L) for w in ("weight_ih", "weight_hh")}
    if bias:
        used |= {f"{prefix}{b}_l{k}" for k in range(L) for b in ("bias_ih", "bias_hh")}
    rest = {k: v for k, v in tensors.items() if k not in used}
    V = vocab_size

    head = _pick("head", [k for k, v in rest.items() if v.dim() == 2 and tuple(v.shape) == (V, H)], HEAD, HEAD_HINTS,
                 EMBED_HINTS, (V, H))
    if head is None:
        _refuse_other_vocab_size(rest, V, H, "output layer")
        raise RnnscopeError(f"no output layer: expected a ({V}, {H}) Linear weight (vocabulary x hidden) after "
                            f"{prefix}*; 2-D tensors left: {_list_keys(rest, two_d=True)}; name it with --map KEY={HEAD}")
    del rest[head]
    head_bias = _bias_of(head)
    if head_bias is not None and head_bias in rest:
        _expect(rest, head_bias, (V,))
        del rest[head_bias]
    else:
        head_bias = None

    embed = _pick("embedding", [k for k, v in rest.items() if v.dim() == 2 and tuple(v.shape) == (V, I)], EMBED,
                  EMBED_HINTS, HEAD_HINTS, (V, I))
    if embed is not None:
        del rest[embed]
    elif I != V:
        _refuse_other_vocab_size(rest, V, I, "embedding")
        raise RnnscopeError(f"no embedding: {prefix}weight_ih_l0 reads {I} inputs, so the input is neither one-hot "
                            f"({V} characters) nor a ({V}, {I}) embedding; 2-D tensors left: "
                            f"{_list_keys(rest, two_d=True)}; name it with --map KEY={EMBED}")
    if rest:
        raise RnnscopeError(f"tensors outside embedding -> {cell.upper()} -> linear head: {_list_keys(rest)}; rnnscope "
                            "imports exactly that architecture (an extra layer changes what the model computes). If one "
                            f"is the embedding or head under another name, use --map KEY={EMBED} or KEY={HEAD}")
    return Layout(cell, nonlinearity, L, H, I, V, prefix, bias, embed, head, head_bias)


def _refuse_other_vocab_size(rest: Mapping[str, torch.Tensor], V: int, cols: int, what: str) -> None:
    """A matrix with the right columns but not V rows is the layer we looked for: the vocabulary is what is wrong."""
    other = [k for k, v in rest.items() if v.dim() == 2 and v.shape[1] == cols]
    if other:
        k = other[0]
        raise RnnscopeError(f"the vocabulary has {V} characters but the weights have {rest[k].shape[0]} "
                            f"({what} {k} is {_shape(rest[k])}): give the vocabulary the model was trained with")


def _recurrent_module(tensors: Mapping[str, torch.Tensor]) -> tuple[str, list[int]]:
    found: dict[str, set[int]] = {}
    for key, t in tensors.items():
        m = RECURRENT.match(key)
        if not m:
            continue
        if m["rev"]:
            raise RnnscopeError(f"{key}: a bidirectional recurrent module (bidirectional=True) also reads each text "
                                "backwards, so it is not a left-to-right character model rnnscope can trace; import a "
                                "unidirectional one")
        if m["part"] == "hr":
            raise RnnscopeError(f"{key} {_shape(t)}: an LSTM with a projection (proj_size={t.shape[0]}) is not supported: "
                                "its h is the projected vector, not the cell's units; import a model without proj_size")
        if m["kind"] == "weight" and m["part"] == "ih":
            found.setdefault(m["prefix"], set()).add(int(m["k"]))
    if not found:
        raise RnnscopeError("no recurrent module: expected nn.RNN/nn.LSTM/nn.GRU keys such as rnn.weight_ih_l0 and "
                            f"rnn.weight_hh_l0 (keys: {_list_keys(tensors)}); rename them with --map OLD=NEW")
    if len(found) > 1:
        names = ", ".join(f"{p or '(no prefix)'}* ({len(ks)} layer{'s' if len(ks) > 1 else ''})"
                          for p, ks in sorted(found.items()))
        raise RnnscopeError(f"ambiguous recurrent module: {len(found)} candidates: {names}; rnnscope imports one stack. If "
                            "they are layers of one stack, give them one prefix with --map, e.g. "
                            "--map rnn2.weight_ih_l0=rnn1.weight_ih_l1")
    prefix, ks = next(iter(found.items()))
    if sorted(ks) != list(range(len(ks))):
        missing = min(set(range(max(ks) + 1)) - ks)
        raise RnnscopeError(f"{prefix}weight_ih_l{missing} is missing: the layers must run l0..l{max(ks)}")
    return prefix, sorted(ks)


def _pick(role: str, cands: list[str], canonical: str, hints: tuple[str, ...], other_hints: tuple[str, ...],
          shape: tuple[int, int]) -> str | None:
    """One candidate: the canonical name, the only one, or the one whose module name says so."""
    if canonical in cands:
        return canonical
    if len(cands) <= 1:
        return cands[0] if cands else None
    named = [k for k in cands if _hinted(k, hints)] or [k for k in cands if not _hinted(k, other_hints)]
    if len(named) == 1:
        return named[0]
    listed = ", ".join(cands)
    raise RnnscopeError(f"ambiguous {role}: {len(cands)} tensors have its shape {shape}: {listed}; say which with "
                        f"--map {cands[0]}={canonical}")


def _hinted(key: str, hints: tuple[str, ...]) -> bool:
    module = key.rsplit(".", 1)[0].rsplit(".", 1)[-1].lower() if "." in key else key.lower()
    return any(h in module for h in hints)


def _bias_of(weight_key: str) -> str | None:
    return weight_key[: -len("weight")] + "bias" if weight_key.endswith("weight") else None


def _matrix(tensors: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    t = tensors.get(key)
    if t is None:
        raise RnnscopeError(f"{key} is missing")
    if t.dim() != 2 or not t.is_floating_point():
        raise RnnscopeError(f"{key} is {_shape(t)} {str(t.dtype).removeprefix('torch.')}: expected a 2-D float matrix")
    return t


def _expect(tensors: Mapping[str, torch.Tensor], key: str, shape: tuple[int, ...]) -> None:
    t = tensors.get(key)
    if t is None:
        raise RnnscopeError(f"{key} is missing")
    if tuple(t.shape) != shape or not t.is_floating_point():
        raise RnnscopeError(f"{key} is {_shape(t)}, expected {shape} for this stack")


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(map(str, t.shape)) + ("," if t.dim() == 1 else "") + ")"


def _list_keys(tensors: Mapping[str, torch.Tensor], two_d: bool = False, limit: int = 8) -> str:
    keys = [k for k, v in tensors.items() if not two_d or v.dim() == 2]
    shown = ", ".join(f"{k} {_shape(tensors[k])}" for k in keys[:limit])
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return (shown + more) or "none"
