"""Bring your own model: a char-level RNN/LSTM/GRU state_dict trained elsewhere -> an rnnscope checkpoint.

The source's tensors are placed by models/import_layout.py and copied into a CharLM:
- rnnscope's vocabulary puts an unknown character at index 0 (models/vocab.py). The source has
  none, so the CharLM gets one extra row: a zero embedding, a zero head row and a head bias of
  UNK_LOGIT, far below any real logit, so it never takes probability from a real character.
- one-hot input (no embedding; weight_ih_l0 has V columns) becomes an identity embedding, E = V:
  embedding row i is the one-hot vector of character i, so layer 0 sees exactly what it saw.
- a module without biases gets zero biases; a head without a bias gets a zero bias.
Then the import proves itself: PyTorch's own nn.Embedding/nn.LSTM/nn.GRU/nn.RNN/nn.Linear are
built from the same source tensors and stepped one character at a time, and the imported model's
hidden states (every layer's h, and c) and logits must agree within CHECK_TOLERANCE on a sample
(and the trace engine's, what the page shows, within float32's TRACE_TOLERANCE), or nothing is written.
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .atlas import write_atlas
from .checkpoint import CONFIG, Checkpoint, _swap_in, save_checkpoint
from .charlm import CharLM, ModelConfig
from .errors import RnnscopeError
from .import_layout import Layout, apply_maps, read_source, recognise
from .import_vocab import SourceVocab, read_user_text, read_vocab
from .trace import run_trace
from .vocab import UNK, CharVocab

UNK_LOGIT = -50.0  # e^-50 ~ 2e-22: the added unknown character never takes probability from a real one
CHECK_TOLERANCE = 1e-5  # |imported - PyTorch| <= this x max(1, largest |PyTorch| value of the same step), in float64
TRACE_TOLERANCE = 1e-3  # the same for the float32 trace engine: rounding, not placement, sets its error
CHECK_CHARS = 256  # sample length: the start of --eval text, then random characters of the vocabulary
ATLAS_CHARS = 30_000
_MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass
class ImportResult:
    path: Path
    layout: Layout
    check: dict  # the self-check: per quantity, the largest error seen
    card: dict


def import_model(src: str | Path, vocab_path: str | Path, out: str | Path, maps: list[str] | None = None,
                 nonlinearity: str = "tanh", eval_path: str | Path | None = None, force: bool = False) -> ImportResult:
    """Read, place, build, check and write; with `eval_path`, also bits/char, probe units and the atlas."""
    out = Path(out)
    _check_target(out, force)
    source = read_source(src)
    vocab = read_vocab(vocab_path)
    tensors = apply_maps(source.tensors, maps or [])
    layout = recognise(tensors, len(vocab), nonlinearity)
    bad = [k for k, t in tensors.items() if not torch.isfinite(t).all()]
    if bad:
        raise RnnscopeError(f"{bad[0]} holds NaN or infinite values: the model diverged in training or the file is damaged")
    eval_text = _read_eval(eval_path) if eval_path is not None else None
    rns_vocab, rows = vocab.to_rnnscope()
    model = build_charlm(tensors, layout, rows)
    sample = check_sample(vocab, eval_text)
    check = self_check(model, rns_vocab, rows, tensors, layout, sample)

    notes = [n for n in (source.note, vocab.note) if n]
    if UNK not in vocab.chars:
        notes.append(f"rnnscope added the unknown character at index 0 (zero embedding, head bias {UNK_LOGIT:g}); "
                     "characters outside the vocabulary read as it")
    if layout.embed_key is None:
        notes.append(f"one-hot input imported as an identity embedding ({layout.vocab_size} wide)")
    if not layout.bias:
        notes.append("the recurrent module has no biases: imported as zero biases")
    if layout.head_bias_key is None:
        notes.append("the output layer has no bias: imported as a zero bias")
    card = {
        "imported": True,
        "source": {"file": Path(src).name, "sha256": source.sha256, "format": source.format,
                   "maps": list(maps or [])},
        "layout": layout.describe(),
        "vocab_source": vocab.kind,
        "self_check": check,
        "params": model.num_params(),
        "notes": notes,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
    }
    if layout.cell == "rnn":
        card["nonlinearity"] = layout.nonlinearity
    held_out = None
    if eval_text is not None:
        known = set(vocab.chars)
        held_out = "".join(ch for ch in eval_text if ch in known)  # what the source model can read
        card.update(_evaluate_on(Checkpoint(model, rns_vocab, card), held_out, Path(eval_path).name,
                                dropped=len(eval_text) - len(held_out)))
    staging = out.parent / f".{out.name}.importing"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        save_checkpoint(staging, model, rns_vocab, card)
        if held_out is not None:
            write_atlas(Checkpoint(model, rns_vocab, card, staging), held_out, out.name, ATLAS_CHARS)
        (staging / "README.md").write_text(model_card(out.name, card), encoding="utf-8")
        (staging / "README.md").chmod(0o644)
        # Only now does the folder get a servable name: a server never sees half an import.
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ImportResult(out, layout, check, card)


def _evaluate_on(ck: Checkpoint, text: str, label: str, dropped: int = 0) -> dict:
    """Card entries from held-out text (only characters in the vocabulary; `dropped` says how many were not)."""
    from .evaluate import held_out_entries  # the measurement a quickstart model's card gets too

    if len(text) < 100:
        raise RnnscopeError(f"--eval {label}: only {len(text)} of its characters are in the vocabulary; "
                            "is it text of the kind the model was trained on?")
    return held_out_entries(ck, text, label, dropped)[0]


def _check_target(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RnnscopeError(f"--out {out} is a file, not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / CONFIG).is_file():  # never replace a folder of models, or anything else, by mistake
        raise RnnscopeError(f"--out {out} is a folder that is not an rnnscope checkpoint: give a new or empty folder "
                            "(to add a model to a folder of models, pass --name NAME)")
    if not force:
        raise RnnscopeError(f"--out {out} already holds a checkpoint: pass --force to replace it")


def _read_eval(path: str | Path) -> str:
    path = Path(path)
    text = read_user_text(path, f"--eval {path}")
    if len(text) < 100:
        raise RnnscopeError(f"--eval {path} has {len(text)} characters: held-out text needs at least 100")
    return text


# ---- building the CharLM
@torch.no_grad()
def build_charlm(tensors: dict[str, torch.Tensor], layout: Layout, rows: list[int | None]) -> CharLM:
    """A CharLM computing what the source computes; rows[i] is the source row of rnnscope index i (None: added)."""
    V1 = len(rows)
    E = layout.input_size
    config = ModelConfig(cell=layout.cell, n_layers=layout.n_layers, hidden=layout.hidden, emb=E, vocab_size=V1,
                         nonlinearity=layout.nonlinearity)
    model = CharLM(config).eval()
    src_embed = tensors[layout.embed_key] if layout.embed_key else torch.eye(layout.vocab_size)  # (V, E)
    head_w = tensors[layout.head_key]  # (V, H)
    head_b = tensors[layout.head_bias_key] if layout.head_bias_key else torch.zeros(layout.vocab_size)
    for i, r in enumerate(rows):
        model.embed.weight[i] = src_embed[r] if r is not None else 0.0
        model.head.weight[i] = head_w[r] if r is not None else 0.0
        model.head.bias[i] = head_b[r] if r is not None else UNK_LOGIT
    for k, layer in enumerate(model.layers):
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            target = getattr(layer, f"{kind}_l0")
            key = layout.key(kind, k)
            target.copy_(tensors[key] if key in tensors else torch.zeros_like(target))
    return model


# ---- the self-check against PyTorch's own modules
class Reference(nn.Module):
    """The source model as its author would have written it, from PyTorch's modules and the source tensors."""

    def __init__(self, tensors: dict[str, torch.Tensor], layout: Layout):
        super().__init__()
        self.layout = layout
        V, I, H = layout.vocab_size, layout.input_size, layout.hidden
        self.embed = nn.Embedding(V, I) if layout.embed_key else None
        extra = {"nonlinearity": layout.nonlinearity} if layout.cell == "rnn" else {}
        self.rnn = _MODULES[layout.cell](I, H, num_layers=layout.n_layers, bias=layout.bias, **extra)
        self.head = nn.Linear(H, V, bias=layout.head_bias_key is not None)
        with torch.no_grad():
            if self.embed is not None:
                self.embed.load_state_dict({"weight": tensors[layout.embed_key]})
            self.rnn.load_state_dict({n: tensors[layout.prefix + n] for n, _ in self.rnn.named_parameters()})
            head = {"weight": tensors[layout.head_key]}
            if layout.head_bias_key:
                head["bias"] = tensors[layout.head_bias_key]
            self.head.load_state_dict(head)

    @torch.no_grad()
    def step_all(self, ids: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, torch.Tensor]:
        """ids (T,) source indices -> per layer h (T, H), per layer c (T, H) for an LSTM, logits (T, V).

        One character at a time, so that every step's state (not only the last) comes from the module itself.
        """
        dtype = self.head.weight.dtype
        x = self.embed(ids) if self.embed is not None else F.one_hot(ids, self.layout.vocab_size).to(dtype)  # (T, I)
        L, T = self.layout.n_layers, len(ids)
        hs = torch.empty(L, T, self.layout.hidden, dtype=dtype)
        cs = torch.empty(L, T, self.layout.hidden, dtype=dtype) if self.layout.cell == "lstm" else None
        outs, state = [], None
        for t in range(T):
            out, state = self.rnn(x[t : t + 1, None, :], state)  # (1, 1, H); state (L, 1, H) or a pair
            h = state[0] if isinstance(state, tuple) else state
            hs[:, t] = h[:, 0]
            if cs is not None:
                cs[:, t] = state[1][:, 0]
            outs.append(out[0, 0])
        return list(hs), None if cs is None else list(cs), self.head(torch.stack(outs))  # (T, V)


def check_sample(vocab: SourceVocab, eval_text: str | None, n: int = CHECK_CHARS) -> str:
    """The start of the held-out text (its known characters) if given, then random vocabulary characters."""
    known = set(vocab.chars)
    head = "".join(ch for ch in (eval_text or "")[: n * 4] if ch in known)[: n // 2]
    gen = torch.Generator().manual_seed(0)
    tail = torch.randint(len(vocab), (n - len(head),), generator=gen).tolist()
    return head + "".join(vocab.chars[i] for i in tail)


@torch.no_grad()
def self_check(model: CharLM, rns_vocab: CharVocab, rows: list[int | None], tensors: dict[str, torch.Tensor],
               layout: Layout, sample: str) -> dict:
    """Compare the imported model with PyTorch's own modules on `sample`; raise past tolerance.

    Two comparisons, both against the reference run in float64:
    - the imported CharLM, also in float64 and stepped the same way: only a wrong placement of a
      weight can differ here (rounding is ~1e-15), so CHECK_TOLERANCE is strict;
    - the trace engine on the float32 model, what the server shows: float32 matrix products summed
      in another order drift by ~1e-6..1e-5 over a few hundred steps of a trained model (measured on
      the shipped 512-1024-unit models), so it gets TRACE_TOLERANCE.
    """
    ref = Reference(tensors, layout).double()
    src_index = {ch: r for ch, r in zip(rns_vocab.chars, rows) if r is not None}
    ids = torch.tensor([src_index[ch] for ch in sample], dtype=torch.long)
    ref_h, ref_c, ref_logits = ref.step_all(ids)
    user_cols = torch.tensor([rows.index(r) for r in range(layout.vocab_size)])
    my_h, my_c, my_logits = step_charlm(copy.deepcopy(model).double(), rns_vocab.encode_tensor(sample))
    theirs = {("h", k): ref_h[k] for k in range(layout.n_layers)}
    mine = {("h", k): my_h[k] for k in range(layout.n_layers)}
    if ref_c is not None:
        theirs |= {("c", k): ref_c[k] for k in range(layout.n_layers)}
        mine |= {("c", k): my_c[k] for k in range(layout.n_layers)}
    theirs[("logits", None)], mine[("logits", None)] = ref_logits, my_logits[:, user_cols]
    worst = _compare(mine, theirs, CHECK_TOLERANCE, layout, "")

    states = ["h", "c"] if layout.cell == "lstm" else ["h"]
    tr = run_trace(model, rns_vocab, sample, states=states, topk=0)
    traced = {(s, k): torch.from_numpy(np.asarray(tr.states[k][s], np.float64)) for k in range(layout.n_layers)
              for s in states}
    worst_trace = _compare(traced, theirs, TRACE_TOLERANCE, layout, "the float32 trace of ")
    return {"chars": len(sample), "against": f"torch.nn.{_MODULES[layout.cell].__name__}", "dtype": "float64",
            "tolerance": CHECK_TOLERANCE, "max_error": worst,
            "trace_tolerance": TRACE_TOLERANCE, "trace_max_error": worst_trace}


def step_charlm(model: CharLM, ids: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, torch.Tensor]:
    """ids (T,) -> per layer h (T, H), c (T, H) for an LSTM, logits (T, V+1): CharLM.forward one character at a time."""
    L, T, H = model.config.n_layers, len(ids), model.config.hidden
    dtype = model.head.weight.dtype
    hs = torch.empty(L, T, H, dtype=dtype)
    cs = torch.empty(L, T, H, dtype=dtype) if model.config.cell == "lstm" else None
    logits, state = [], None
    for t in range(T):
        out, _, state = model(ids[t : t + 1][None], state)  # (1, 1, V+1); state per layer (1, 1, H) or a pair
        for k, s in enumerate(state):
            hs[k, t] = (s[0] if isinstance(s, tuple) else s)[0, 0]
            if cs is not None:
                cs[k, t] = s[1][0, 0]
        logits.append(out[0, 0])
    return list(hs), None if cs is None else list(cs), torch.stack(logits)


def _compare(mine: dict, theirs: dict, tolerance: float, layout: Layout, what_of: str) -> dict[str, float]:
    """Largest error per quantity, relative to each step's scale: max |a - b| / max(1, max |b| of that step)."""
    worst: dict[str, float] = {}
    for (what, k), a in mine.items():
        b = theirs[(what, k)]
        err = (a - b).abs() / b.abs().amax(dim=1, keepdim=True).clamp(min=1.0)  # (T, U)
        e = float(err.max())
        if not math.isfinite(e) or e > tolerance:
            t, u = divmod(int(err.nan_to_num(float("inf")).argmax()), err.shape[1])
            where = f"{what_of}the logits differ" if k is None else f"{what_of}layer {k} {what} differs"
            module = f"nn.{_MODULES[layout.cell].__name__}" if k is not None else "reference"
            big = float(b.abs().max())
            why = (f"PyTorch's own values reach {big:.3g} (an exploding model?), where rounding alone grows this large"
                   if big > 1e3 else "the weights do not import faithfully")
            raise RnnscopeError(f"self-check failed: {where} from PyTorch's {module} by {e:.3g} at position {t}, "
                                f"unit {u} (tolerance {tolerance:g}); {why}, so nothing was written")
        worst[what] = max(worst.get(what, 0.0), float(f"{e:.3g}"))
    return worst


def model_card(name: str, card: dict) -> str:
    """A short README.md beside the weights: where they came from and how they were checked."""
    src = card["source"]
    chk = card["self_check"]
    errs = ", ".join(f"{k} {v:.2g}" for k, v in chk["max_error"].items())
    trace_errs = ", ".join(f"{k} {v:.2g}" for k, v in chk["trace_max_error"].items())
    lines = [f"# {name}", "", "Imported with `rnnscope import` from a state_dict trained elsewhere.", "",
             f"- **Source:** `{src['file']}` ({src['format']}), sha256 `{src['sha256']}`",
             f"- **Layout:** {card['layout']}",
             f"- **Self-check:** against {chk['against']} on {chk['chars']} characters, largest error {errs} "
             f"in float64 (tolerance {chk['tolerance']:g}); the float32 trace the app shows: {trace_errs} "
             f"(tolerance {chk['trace_tolerance']:g})"]
    if "val_bpc" in card:
        lines.append(f"- **Held-out:** {card['val_bpc']:.4f} bits per character over {card['val_chars']:,} "
                     f"characters of `{card['val_text']}`")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in card["notes"]]
    return "\n".join(lines) + "\n"
