"""Startup and logging: a missing htmx copy is called out; request logs never hold the user's text."""

from __future__ import annotations

import logging

import app.main as main_module

from .conftest import make_client


def test_missing_htmx_is_logged_with_the_fix(tiny_models_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(main_module, "HTMX", tmp_path / "vendor" / "htmx.min.js")
    with caplog.at_level(logging.ERROR, logger="rnnscope"):
        with make_client(tiny_models_dir) as c:
            assert c.get("/healthz").status_code == 200
    assert "htmx.min.js is missing" in caplog.text and "npm ci" in caplog.text


def test_access_log_has_path_and_status_but_not_the_text(client, caplog):
    with caplog.at_level(logging.INFO, logger="rnnscope.access"):
        client.get("/", params={"text": "my secret diary"}, headers={"HX-Request": "true"})
    assert "GET / (query" in caplog.text and " 200 " in caplog.text and "htmx" in caplog.text
    assert "secret" not in caplog.text and "diary" not in caplog.text


def test_torch_threads_setting_reaches_new_worker_threads(tiny_models_dir):
    import threading

    import torch

    def threads_in_a_new_thread() -> int:
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        t.start()
        t.join()
        return seen[0]

    before = threads_in_a_new_thread()
    try:
        with make_client(tiny_models_dir, torch_threads=1):
            assert threads_in_a_new_thread() == 1  # request threads are new threads: they get it
    finally:
        torch.set_num_threads(before)
