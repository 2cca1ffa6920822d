"""JSON API shapes (pydantic v2); they are what /openapi.json and /docs describe."""

from __future__ import annotations

from typing import Annotated

import numpy as np

from pydantic import BaseModel, ConfigDict, Field

from app.http.heavy import Pieces


class ModelInfo(BaseModel):
    name: str = Field(description="the checkpoint folder's name; pass it as `model`")
    cell: str = Field(description="rnn, lstm or gru")
    layers: int
    hidden: int = Field(description="units per layer")
    vocab_size: int
    val_bpc: float | None = Field(description="validation bits per character from the model card")
    corpus: str | None
    states: list[str] = Field(description="the states a trace can report for this cell type")
    imported: bool = Field(False, description="brought in with `rnnscope import` from someone's own PyTorch model")
    snapshots: list[int] = Field(default_factory=list,
                                 description="training steps of the model's snapshots (`rnnscope train --snapshots`), "
                                             "in order: pass one as `snapshot` to trace or probe those weights; empty "
                                             "when it has none")


class TraceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as documented: no true for 1, no "3" for 3

    model: str = Field(min_length=1, max_length=128, examples=["austen-lstm"])
    text: str = Field(examples=['"Hello," she said.'])
    layer: int | None = Field(None, ge=0, description="one layer (0 = the first); omitted = every layer")
    state: str | None = Field(None, description="one state (see /api/v1/models); omitted = every state")
    units: list[Annotated[int, Field(ge=0)]] | None = Field(None, min_length=1, max_length=4096,
                                                            description="unit indices (at least one); "
                                                                        "omitted = every unit")
    topk: int = Field(5, ge=0, le=100, description="next-character predictions per position; 0 = none")
    snapshot: int | None = Field(None, ge=0, description="a training step from the model's `snapshots` (see "
                                                         "/api/v1/models): the weights of that step; omitted = the "
                                                         "final weights", examples=[441])


class Prediction(BaseModel):
    char: str
    p: float


class LayerTrace(BaseModel):
    layer: int
    states: dict[str, list[list[float]]] = Field(description="state -> [position][unit] values")


class TraceResponse(BaseModel):
    model: str
    text: str
    length: int
    units: list[int] | None = Field(description="the units each inner list holds, in order; null = all")
    layers: list[LayerTrace]
    topk: list[list[Prediction]] | None = Field(description="per position, the likeliest next characters")
    surprisal_bits: list[float | None] = Field(
        description="-log2 p(actual next character) after each position; null at the last position")
    unknown_positions: list[int] = Field(description="positions of characters the model never saw")
    cached: bool = Field(description="true when served from the trace cache without running the model")
    snapshot: int | None = Field(None, description="the training step whose weights were traced; null = the final weights")


class SnapshotUnit(BaseModel):
    layer: int
    state: str
    unit: int
    score: float = Field(description="auc: max(AUC, 1-AUC); pearson: |r| (on the held-out text the timeline was scored on)")
    sign: int
    metric: str


class SnapshotInfo(BaseModel):
    step: int = Field(description="the training step; pass it as `snapshot`")
    chars_seen: int = Field(description="training characters read by this step")
    val_bpc: float | None = Field(description="validation bits per character of these (float16) weights")
    training_seconds: float | None
    sample: str = Field(description="300 characters sampled after `prime` with one seed and temperature at every step")
    probe_units: dict[str, SnapshotUnit] = Field(description="probe -> the step's best unit on held-out text, where "
                                                             "the timeline recorded them")


class SnapshotTimeline(BaseModel):
    model: str
    prime: str = Field(description="the text every sample continues")
    snapshots: list[SnapshotInfo] = Field(description="in step order; empty when the model has no snapshots")


class Health(BaseModel):
    status: str
    models: int


# ---- arrays to the plain JSON values the API answers with: rounded floats, per-position predictions
def rounded(a, decimals: int) -> list:
    """Nested lists of floats rounded to `decimals` (float16 noise beyond that only costs bytes)."""
    return np.round(np.asarray(a, dtype=np.float64), decimals).tolist()


def predictions(chars: list[str], ids: np.ndarray | None, probs: np.ndarray | None,
                decimals: int) -> list[list[dict]] | None:
    """Per position [{char, p}], likeliest first; None when the trace kept no predictions."""
    if ids is None or probs is None:
        return None
    return [[{"char": chars[i], "p": p} for i, p in zip(ri, rp)]
            for ri, rp in zip(np.asarray(ids).tolist(), rounded(probs, decimals))]


def rounded_pieces(a, decimals: int) -> Pieces:
    """rounded(a, decimals), written a few rows at a time (app.http.heavy, for bodies of many MB)."""
    a = np.asarray(a)
    return Pieces(len(a), int(np.prod(a.shape[1:])), lambda s: rounded(a[s], decimals))


def prediction_pieces(chars: list[str], ids: np.ndarray, probs: np.ndarray, decimals: int) -> Pieces:
    """predictions(chars, ids, probs, decimals), written a few positions at a time."""
    k = ids.shape[1] if ids.ndim > 1 else 1
    return Pieces(len(ids), 2 * k, lambda s: predictions(chars, ids[s], probs[s], decimals))
