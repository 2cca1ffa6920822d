"""A fresh page opens on the model card's own example text when it has a usable one, else on the Austen passage."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.trace.views import DEFAULT_TEXT, EXAMPLE_TEXT_LIMIT, default_text


@pytest.mark.parametrize("card, expected", [
    ({"example_text": "def f(x):\n    return x\n"}, "def f(x):\n    return x\n"),
    ({}, DEFAULT_TEXT),
    ({"example_text": ""}, DEFAULT_TEXT),
    ({"example_text": ["not", "text"]}, DEFAULT_TEXT),
    ({"example_text": "x" * (EXAMPLE_TEXT_LIMIT + 1)}, DEFAULT_TEXT),  # a hand-edited card cannot flood the page
])
def test_default_text_comes_from_the_card_when_it_is_usable(card, expected):
    assert default_text(SimpleNamespace(card=card)) == expected
