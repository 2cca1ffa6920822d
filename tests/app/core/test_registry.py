"""Model discovery: folders with config.json, skipped broken ones, names never turned into paths."""

from __future__ import annotations

import logging
import shutil

from app.core.config import SHIPPED_MODELS_DIR, Settings
from app.core.registry import Registry
from tests.conftest import write_tiny_model


def test_discovers_checkpoint_folders_and_skips_broken_ones_with_a_reason(tmp_path, caplog):
    write_tiny_model(tmp_path / "good")
    (tmp_path / "no-weights").mkdir()
    write_tiny_model(tmp_path / "tmp-src")
    (tmp_path / "tmp-src" / "config.json").rename(tmp_path / "no-weights" / "config.json")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "config.json").write_text('{"model": ')
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "config.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "__pycache__").mkdir()
    reg = Registry(tmp_path)
    with caplog.at_level(logging.WARNING, logger="rnnscope.registry"):
        reg.refresh(force=True)
    assert reg.names() == ["good"]
    assert set(reg.skipped) == {"corrupt", "no-weights"}
    assert "corrupt" in reg.skipped["corrupt"] and "missing" in reg.skipped["no-weights"]
    assert "skipping model corrupt" in caplog.text


def test_a_bad_rewrite_keeps_serving_the_last_good_version(tmp_path):
    write_tiny_model(tmp_path / "m")
    reg = Registry(tmp_path, rescan_seconds=0)
    reg.refresh()
    good = reg.get("m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    reg.refresh()
    assert reg.get("m") is good and "corrupt" in reg.skipped["m"]


def test_a_new_folder_appears_without_a_restart_and_rescans_are_throttled(tmp_path):
    reg = Registry(tmp_path, rescan_seconds=3600)
    reg.refresh(force=True)
    assert reg.names() == [] and reg.default_name("austen-lstm") is None
    write_tiny_model(tmp_path / "late")
    reg.refresh()
    assert reg.names() == []  # within the rescan interval nothing is re-read
    reg.refresh(force=True)
    assert reg.names() == ["late"] and reg.default_name("austen-lstm") == "late"


def test_quote_unit_is_read_from_the_card_only_when_it_exists_in_the_model(tmp_path):
    write_tiny_model(tmp_path / "named", card={"quote_unit": {"layer": 1, "state": "c", "unit": 3, "auc": 0.93}})
    write_tiny_model(tmp_path / "bogus", card={"quote_unit": {"layer": 9, "state": "c", "unit": 3}})
    reg = Registry(tmp_path)
    reg.refresh(force=True)
    q = reg.get("named").quote_unit
    assert (q.layer, q.state, q.unit, q.auc) == (1, "c", 3, 0.93)
    assert reg.get("bogus").quote_unit is None


def test_unknown_and_path_like_names_are_refused(tmp_path):
    write_tiny_model(tmp_path / "m")
    reg = Registry(tmp_path)
    reg.refresh(force=True)
    for name in ("../m", "m/", "/m", "..", "nope"):
        try:
            reg.get(name)
        except Exception as e:  # noqa: BLE001
            assert "unknown model" in str(e)
        else:
            raise AssertionError(f"{name!r} was accepted")


def test_more_folders_are_served_after_the_first_whose_names_win(tmp_path):
    mine, shipped = tmp_path / "mine", tmp_path / "shipped"
    write_tiny_model(mine / "story", seed=1)
    write_tiny_model(mine / "austen-lstm", seed=2)  # shadows the shipped one of that name
    write_tiny_model(shipped / "austen-lstm", seed=3)
    write_tiny_model(shipped / "austen-gru", "gru", seed=4)
    reg = Registry(mine, rescan_seconds=0, also=(shipped, tmp_path / "gone"))
    reg.refresh()
    assert reg.names() == ["austen-lstm", "story", "austen-gru"]  # the first folder's models first
    assert reg.get("austen-lstm").path == mine / "austen-lstm" and reg.get("austen-gru").path == shipped / "austen-gru"
    assert reg.skipped == {f"austen-lstm ({shipped})": f"the model of the same name in {mine} is served",
                           f"* {tmp_path / 'gone'}": f"model folder {tmp_path / 'gone'} cannot be read "
                                                    "(No such file or directory)"}
    # The first folder's model goes: the next folder's model of that name is served from there.
    shutil.rmtree(mine / "austen-lstm")
    reg.refresh()
    assert reg.get("austen-lstm").path == shipped / "austen-lstm"


def test_serve_shipped_adds_the_zoo_unless_it_is_the_folder_itself(tmp_path):
    assert Settings(models_dir=tmp_path).also_models_dirs() == ()
    assert Settings(models_dir=tmp_path, serve_shipped=True).also_models_dirs() == (SHIPPED_MODELS_DIR,)
    assert Settings(serve_shipped=True).also_models_dirs() == ()  # models_dir is the zoo already
