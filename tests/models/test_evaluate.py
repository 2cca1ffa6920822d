from models.evaluate import QUOTE_UNIT_MIN_AUC, BestUnit, card_entries


def _unit(score: float) -> BestUnit:
    return BestUnit(probe="quotes", layer=1, state="c", unit=7, score=score, sign=1, metric="auc", chars=1000)


def test_a_card_names_a_quote_unit_only_when_it_really_separates_quotes():
    strong = card_entries([_unit(0.99)])
    assert strong["quote_unit"] == {"layer": 1, "state": "c", "unit": 7, "auc": 0.99, "sign": 1}
    weak = card_entries([_unit(QUOTE_UNIT_MIN_AUC - 0.01)])
    assert "quote_unit" not in weak
    assert weak["probe_units"]["quotes"]["score"] == QUOTE_UNIT_MIN_AUC - 0.01  # the best unit is still recorded
