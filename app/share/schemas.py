"""The share API's JSON shapes (pydantic v2), as /openapi.json and /docs describe them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.probe.schemas import DEFAULT_PROBE, MAX_PATTERN_CHARS, PROBE_IDS


class ShareRequest(BaseModel):
    """The view's settings, as the page's URL query has them; other well-formed settings are kept too."""

    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra={"examples": [
        {"model": "austen-lstm", "text": '"Hello," she said.', "layer": 1, "state": "c", "unit": 7, "mode": "neuron"},
        {"model": "austen-lstm", "text": '"Hello," she said.', "probe": "regex", "pattern": "[A-Z][a-z]+"}]})

    text: str = Field(description="the text the view colours")
    model: str | None = Field(None, description="default: the server's default model")
    layer: int | None = Field(None, description="default: the model card's quote unit, else 0")
    state: str | None = None
    unit: int | None = None
    mode: str | None = Field(None, description="neuron (default) or surprisal")
    probe: str | None = Field(None, description=f"the Find units panel's probe: one of {PROBE_IDS}; "
                                                f"omitted = {DEFAULT_PROBE}, the panel's default")
    pattern: str | None = Field(None, description="the regex probe's regular expression: only with probe regex, "
                                                  f"at most {MAX_PATTERN_CHARS} characters")


class ShareLink(BaseModel):
    id: str = Field(description="12 characters, a-z and 2-7; the same view always gets the same id")
    url: str = Field(description="the link: opens the view as a full page")
    view: dict[str, str] = Field(description="the stored settings, defaults filled in")
