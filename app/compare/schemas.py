"""JSON shapes of POST /api/v1/match (pydantic v2, described in OpenAPI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from models.probes import PROBES

from app.probe.schemas import MAX_PATTERN_CHARS

MAX_MODELS = 4  # models side by side: a fifth panel would be too narrow to read, and a fifth ranking too slow
DEFAULT_TOP = 5  # candidates per model: the best match and the next few, one click away on the page
MAX_TOP = 50


class Anchor(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=128, examples=["austen-lstm"])
    layer: int = Field(ge=0, examples=[1])
    state: str = Field(min_length=1, max_length=16, examples=["c"], description="h, c, a gate, kept or written")
    unit: int = Field(ge=0, examples=[336])


class MatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as documented: no true for 1, no "3" for 3

    text: str = Field(examples=['"Hello," she said. "Are you there?" He did not answer.'])
    anchor: Anchor | None = Field(None, description="the unit to match: every unit of each model is ranked by "
                                                    "|Pearson r| with its values on this text. Give this or `probe`")
    probe: str | None = Field(None, description="instead of an anchor, rank each model's units "
                              f"against this probe (as POST /api/v1/probe does), one of: {', '.join(PROBES)}")
    pattern: str | None = Field(None, max_length=MAX_PATTERN_CHARS, description="the regex probe's pattern")
    models: list[str] = Field(examples=[["austen-gru", "austen-rnn"]],
                              description=f"1 to {MAX_MODELS} installed models to find matches in (the anchor's own "
                                          "model may be one: its best match is the anchor itself, r = 1)",
                              json_schema_extra={"minItems": 1, "maxItems": MAX_MODELS})
    top: int = Field(DEFAULT_TOP, ge=1, le=MAX_TOP, description="candidates per model, best first")

    @field_validator("models")
    @classmethod
    def _models_in_range(cls, names: list[str]) -> list[str]:
        """Checked here, not by max_length, so the refusal says what to do in the words the page uses."""
        if not names:
            raise PydanticCustomError("no_models", "name at least one model to find matches in")
        if len(names) > MAX_MODELS:
            raise PydanticCustomError("too_many_models", "compare at most {max} models at once, got {n}",
                                      {"max": MAX_MODELS, "n": len(names)})
        return names

    @model_validator(mode="after")
    def _anchor_or_probe(self) -> MatchRequest:
        """One way of matching: not expressible in the JSON Schema above, so said here."""
        if (self.anchor is None) == (self.probe is None):
            raise PydanticCustomError("anchor_or_probe", "give either an anchor unit "
                                      '({"model", "layer", "state", "unit"}) or a probe, not both or neither')
        return self


class MatchUnit(BaseModel):
    layer: int
    state: str
    unit: int
    r: float | None = Field(description="Pearson r with the anchor (or the numeric probe), sign included; null when "
                                        "the metric is AUC")
    score: float = Field(description="pearson: |r| in [0, 1]; auc: max(AUC, 1 - AUC) in [0.5, 1]")
    sign: Literal[1, -1] = Field(description="+1: rises with the anchor / higher where the probe is true; -1: the reverse")
    metric: Literal["pearson", "auc"]


class ModelMatch(BaseModel):
    model: str
    units: list[MatchUnit] = Field(description="the best-matching units, best first: each (layer, unit) once, at its "
                                               "best-scoring state")
    scored: int = Field(description="units scored: every unit of every state of every layer")
    unseen: int = Field(description="characters of the text this model never saw in training (it reads each as its "
                                    "unknown character)")
    note: str | None = Field(None, description="a warning when many characters are unseen")
    cached: bool = Field(description="the model did not run: its trace came from the cache")
    trace_seconds: float
    rank_seconds: float


class MatchResponse(BaseModel):
    length: int = Field(description="characters in the text")
    anchor: Anchor | None
    probe: str | None
    matches: list[ModelMatch] = Field(description="one per requested model, in the order asked")
