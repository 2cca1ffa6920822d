"""JSON shapes of the dynamics API (pydantic v2): gradients, toy RNN, saturation, interventions.

Kept apart from app/trace/schemas.py so the trace API and these can change independently.
Floats that can be undefined (no next character, no counterpart in the original) are null.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import StreamingResponse

from models.dynamics import MAX_CLAMP, MAX_LOOKBACK, MAX_TOPK

from app.dynamics.results import MAX_INTERVENE_CHARS
from app.trace.schemas import Prediction

MAX_COMPARE = 3
# The intervention page's one text limit (app/dynamics/service.py), for the clamp and both counterfactual texts.
INTERVENE_TEXT = (f"1 to {MAX_INTERVENE_CHARS:,} characters (or the server's RNNSCOPE_MAX_CHARS if lower); "
                  "longer is a 413")
LIMITED = {"maxLength": MAX_INTERVENE_CHARS}  # documented, not validated here: the service's 413 names the limit


class GradientsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as documented: no true for 1, no "3" for 3

    models: list[str] = Field(min_length=1, max_length=MAX_COMPARE, examples=[["austen-lstm"]],
                              description=f"1 to {MAX_COMPARE} installed models, compared on the same text")
    text: str = Field(examples=['"Hello," she said.'])
    position: int | None = Field(None, ge=0, description="T: the position differentiated; omitted = the second-last "
                                                    "character (so there is a true next character)")
    lookback: int = Field(50, ge=1, le=MAX_LOOKBACK, description=f"how many steps back from T, 1 to {MAX_LOOKBACK}")


class ModelFlow(BaseModel):
    model: str
    cell: str
    layer: int = Field(description="the layer whose h_T is differentiated (the top layer, which feeds the prediction)")
    position: int
    start: int = Field(description="first position of the window; index k of each list is position start + k")
    target: str = Field(description="the character whose log-probability the saliency differentiates "
                                    "(the true next character, or the model's top guess at the last position)")
    jacobian_norm: list[float] = Field(description="||dh_T/dh_t||_F for t = start..T")
    jacobian_probes: int | None = Field(None, description="null: exact; else the number of random probes "
                                                          "behind an unbiased estimate of ||J||_F^2")
    saliency: list[float] = Field(description="||d log p(target) / d x_t|| for t = start..T (x_t = input embedding)")
    seconds: float
    cached: bool


class GradientsResponse(BaseModel):
    text: str
    position: int
    lookback: int
    flows: list[ModelFlow]


class ToyResponse(BaseModel):
    w_hh: float
    w_xh: float
    b: float
    h0: float
    xs: list[float]
    h: list[float] = Field(description="h_1..h_T")
    local: list[float] = Field(description="dh_t/dh_(t-1) = tanh'(a_t) * w_hh for t = 1..T")
    dhT_dht: list[float | None] = Field(description="dh_T/dh_t for t = 1..T (the product of the local factors "
                                                    "after t); null where it overflows a double")
    dhT_dh1: float | None


class GateSaturation(BaseModel):
    left: list[float] = Field(description="per unit: fraction of steps with the gate below the low threshold")
    right: list[float] = Field(description="per unit: fraction of steps with the gate above the high threshold")


class LayerSaturation(BaseModel):
    layer: int
    gates: dict[str, GateSaturation]


class SaturationResponse(BaseModel):
    model: str
    cell: str
    source: str = Field(description="which text the fractions were measured on")
    held_out: bool = Field(description="true: measured on the model's held-out text; false: on the `text` sent, "
                                       "because this server has no held-out text for the model (`warning` says why)")
    warning: str | None = Field(None, description="why the fractions are not from held-out text; null when they are")
    chars: int
    low: float
    high: float
    layers: list[LayerSaturation]
    cached: bool


class InterveneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as documented: no true for 1, no "3" for 3

    model: str = Field(min_length=1, max_length=128, examples=["austen-lstm"])
    text: str = Field(examples=['She said, "I shall go." He left.'], json_schema_extra=LIMITED,
                      description=INTERVENE_TEXT)
    layer: int = Field(ge=0)
    state: str = Field(description="h, or c for an LSTM")
    unit: int = Field(ge=0)
    value: float = Field(0.0, ge=-MAX_CLAMP, le=MAX_CLAMP, description="the clamp value (0 zeroes the unit)")
    start: int = Field(0, ge=0, description="first position the clamp holds at")
    watch: str | None = Field('"', description="one character whose next-character probability is reported")
    topk: int = Field(5, ge=0, le=MAX_TOPK,
                      description=f"how many next-character predictions (and largest probability changes) to report "
                                  f"per position, before and after the clamp: 0 to {MAX_TOPK}; 0 = none")


class ProbabilityChange(BaseModel):
    char: str = Field(description="a character the model can predict")
    before: float = Field(description="p(char is next) with the unit free")
    after: float = Field(description="p(char is next) with the unit clamped")
    change: float = Field(description="after - before")


class WatchGroupSummary(BaseModel):
    group: str = Field(description="closing / opening (watch is a double quote), inside / outside (any other "
                                   "character: inside or outside double quotes), or all")
    label: str
    places: int = Field(description="positions t where the watched character really comes next (text[t+1])")
    mean_p_before: float | None = Field(description="mean p(watch next) over those places, unit free; null for none")
    mean_p_after: float | None = Field(description="the same with the unit clamped")


class WatchSummary(BaseModel):
    split: str = Field(description="how the places were split (the quotes probe, models/probes.py)")
    all: WatchGroupSummary
    groups: list[WatchGroupSummary] = Field(description="the split: every place is in exactly one group")


class InterveneResponse(BaseModel):
    model: str
    length: int
    layer: int
    state: str
    unit: int
    value: float
    start: int
    watch: str | None
    surprisal_before: list[float | None] = Field(description="-log2 p(text[t+1]) at each t, bits; null at the end")
    surprisal_after: list[float | None]
    prob_before: list[float | None] = Field(description="p(watch is next) at each t; null without watch")
    prob_after: list[float | None]
    value_before: list[float]
    value_after: list[float]
    mean_bits_before: float | None
    mean_bits_after: float | None
    topk: int = Field(description="predictions per position in topk_before, topk_after and top_changes: the "
                                  "request's topk, at most the model's vocabulary size")
    topk_before: list[list[Prediction]] | None = Field(
        description="per position t, the topk likeliest characters to come after text[t] with the unit free, "
                    "likeliest first (the same as a plain trace's topk); null when topk is 0")
    topk_after: list[list[Prediction]] | None = Field(
        description="per position t, the topk likeliest next characters with the unit clamped from start on, "
                    "likeliest first; equal to topk_before before start; null when topk is 0")
    watch_summary: WatchSummary | None = Field(
        None, description="where the watched character really comes next, its mean probability before and after, "
                          "split by what the model has to know there (a closing vs an opening quote); null without "
                          "watch")
    top_changes: list[list[ProbabilityChange]] | None = Field(
        description="per position t, the topk characters whose next-character probability the clamp moved most, "
                    "largest |after - before| first (every change is 0 before start); null when topk is 0")


class CounterfactualRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as documented: no true for 1, no "3" for 3

    model: str = Field(min_length=1, max_length=128, examples=["austen-lstm"])
    original: str = Field(examples=['She said, "I shall go." He left.'], json_schema_extra=LIMITED,
                          description=INTERVENE_TEXT)
    edited: str = Field(examples=['She said, I shall go. He left.'], json_schema_extra=LIMITED,
                        description=INTERVENE_TEXT)
    layer: int = Field(ge=0)
    state: str
    unit: int = Field(ge=0)


class CounterfactualResponse(BaseModel):
    model: str
    layer: int
    state: str
    unit: int
    edited: str
    delta: list[float | None] = Field(description="per edited character: after - before; null where the character "
                                                  "has no counterpart in the original")
    before: list[float | None]
    after: list[float]
    unaligned: int = Field(description="edited characters with no counterpart")


class EventStreamResponse(StreamingResponse):
    """Server-sent events: what GET /api/v1/generate/stream declares (and sends), so OpenAPI says text/event-stream."""

    media_type = "text/event-stream"


# The stream's 200 in OpenAPI: SSE text (events separated by a blank line), described event by event.
EVENT_STREAM_CONTENT = {"text/event-stream": {
    "schema": {"type": "string", "description": "server-sent events: `event: NAME` and `data: JSON` lines, a blank "
                                                 "line after each event"},
    "example": 'event: meta\ndata: {"model": "austen-lstm", "n": 1, "temperature": 0.8, "seed": 7, "seed_given": true, '
               '"what": "h[1][3]", "scale": {"lo": -1.0, "hi": 1.0, "label": "tanh range", "bounded": true}}\n\n'
               'event: char\ndata: {"i": 0, "ch": "e", "v": 0.4123, "pos": 0.412}\n\n'
               'event: done\ndata: {"n": 1, "text": "e", "seed": 7, "seconds": 0.031}\n\n',
}}
