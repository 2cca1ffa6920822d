"""JSON shapes of the probe, span and neuron routes (pydantic v2, described in OpenAPI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from models.probes import PROBES

DEFAULT_PROBE = "quotes"  # what the panel opens on when the view names no probe (a view's default; never a stored key)
MAX_PATTERN_CHARS = 500  # the regex probe's pattern, as /api/v1/probe and the panel's input cap it

PROBE_IDS = ", ".join(PROBES)


class ProbeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as documented: no true for 1, no "3" for 3

    model: str = Field(min_length=1, max_length=128, examples=["austen-lstm"])
    text: str = Field(examples=['"Hello," she said. "Are you there?"'])
    probe: str = Field(examples=["quotes"], description=f"one of: {PROBE_IDS}")
    pattern: str | None = Field(None, max_length=MAX_PATTERN_CHARS, description="the regular expression of the regex probe",
                                examples=[r"[A-Z][a-z]+"])
    top: int = Field(20, ge=1, le=200, description="how many units to return, best first")
    snapshot: int | None = Field(None, ge=0, description="a training step from the model's `snapshots` (see "
                                                         "/api/v1/models): rank the units of that step's weights; "
                                                         "omitted = the final weights", examples=[441])


class SpanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as documented: no true for 1, no "3" for 3

    model: str = Field(min_length=1, max_length=128, examples=["austen-lstm"])
    text: str = Field(examples=['"Hello," she said. "Are you there?"'])
    start: int = Field(ge=0, description="first character of the span (0-based)", examples=[1])
    end: int = Field(ge=1, description="one past the last character of the span: greater than start",
                     examples=[7])
    threshold: float = Field(0.3, allow_inf_nan=False,
                             description="a unit is 'on' at a character when its colour is above this on its own "
                                         "colour scale, -1 (purple) .. 0 (white) .. +1 (orange): the value itself for h "
                                         "and the tanh states, the gate's value for gates (0..1), and for c and kept the "
                                         "value over the end of the unit's scale on this text (the 95th percentile of "
                                         "|value|, rounded up), as the page colours it")
    top: int = Field(20, ge=1, le=200, description="how many units to return, best first")

    @model_validator(mode="after")
    def _span_holds_a_character(self) -> SpanRequest:
        """end > start: not expressible in JSON Schema, so said here (the bounds above are in the schema)."""
        if self.end < self.start:
            raise PydanticCustomError("span_order", "the span starts at {start} and ends at {end}: end must come "
                                      "after start", {"start": self.start, "end": self.end})
        if self.end == self.start:
            raise PydanticCustomError("span_empty", "the selected span is empty: select at least one character "
                                      "of the text (end must be greater than start)")
        return self


class UnitRank(BaseModel):
    layer: int
    state: str
    unit: int
    score: float = Field(description="auc: max(AUC, 1-AUC) in [0.5, 1]; pearson: |r| in [0, 1]; span: |fraction on "
                                     "inside - fraction on outside| in [0, 1] (a span of 4 or more characters leaves "
                                     "its first and last out)")
    sign: Literal[1, -1] = Field(description="+1: higher inside / rises with the probe / on inside the span; -1: the reverse")
    metric: Literal["auc", "pearson", "span"]
    roughness: float | None = Field(None, description="how much the unit's colour flickers on this text: mean step "
                                    "between neighbouring characters over its spread (5th to 95th percentile); lower "
                                    "reads cleaner, and breaks exact ties of score; null for a unit that never varies")


class Context(BaseModel):
    position: int = Field(description="character index in the atlas's held-out text")
    before: str = Field(description="the characters just before it (up to 90)")
    char: str = Field(description="the character just read")
    after: str = Field(description="the characters just after it (up to 30)")
    q: float | None = Field(None, description="the activation quantile this sample was taken at")
    value: float | None = Field(None, description="the unit's value after reading `char` (null when the server was too "
                                                  "busy to trace the atlas's text; the page says so)")
    lead: str | None = Field(None, description="where the unit's run that holds here began, when that is further back "
                                               "than `before` reaches (e.g. the opening quote of a long quotation): "
                                               "the characters around that start")
    skipped: int = Field(0, description="characters between `lead` and `before`, left out")


class ProbeMatch(BaseModel):
    probe: str
    score: float
    sign: Literal[1, -1]
    metric: Literal["auc", "pearson"]


class Push(BaseModel):
    char: str
    weight: float = Field(description="this unit's weight into the character's logit")


class Histogram(BaseModel):
    edges: list[float] = Field(description="bin edges, one more than counts")
    counts: list[int]


class NeuronResponse(BaseModel):
    model: str
    layer: int
    state: str
    unit: int
    atlas: bool = Field(description="true when the numbers below come from the model's atlas")
    atlas_problem: str | None = Field(description="why there is no atlas data, and how to build it")
    atlas_chars: int | None = Field(description="held-out characters the atlas was built from")
    min: float | None
    max: float | None
    mean: float | None
    histogram: Histogram | None
    top: list[Context] = Field(description="where the unit is most positive, highest first, each from its own "
                                           "paragraph, never overlapping")
    bottom: list[Context] = Field(description="where the unit is most negative, lowest first, as top")
    quantiles: list[Context] = Field(description="samples at activation quantiles")
    contexts_problem: str | None = Field(None, description="why the contexts carry no values (they are then the "
                                                           "atlas's stored places)")
    probes: list[ProbeMatch] = Field(description="built-in probes, best match first")
    pushes_up: list[Push] | None = Field(description="top layer h only: next characters it makes likelier")
    pushes_down: list[Push] | None = Field(description="top layer h only: next characters it makes less likely")
