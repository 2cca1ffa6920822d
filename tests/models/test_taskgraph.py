"""The task graph a trace runs on: dependencies honoured, errors raised, thread counts kept."""

import threading
import time

import pytest
import torch

from models.taskgraph import TaskGraph


def _chain_graph(log: list, n: int = 6) -> TaskGraph:
    g = TaskGraph()
    for j in range(n):
        g.add(("a", j), lambda j=j: (time.sleep(0.002), log.append(("a", j))), after=[("a", j - 1)] if j else [],
              priority=(0, j))
        g.add(("b", j), lambda j=j: log.append(("b", j)), after=[("a", j)], priority=(1, j))
    return g


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_task_runs_once_after_what_it_depends_on(workers):
    log: list = []
    g = _chain_graph(log)
    g.run(workers)
    assert sorted(log) == sorted([("a", j) for j in range(6)] + [("b", j) for j in range(6)])
    at = {item: n for n, item in enumerate(log)}
    for j in range(6):
        assert at[("a", j)] < at[("b", j)]
        if j:
            assert at[("a", j - 1)] < at[("a", j)]


def test_one_worker_runs_in_insertion_order_on_the_calling_thread():
    names: list = []
    g = TaskGraph()
    for j in range(4):
        g.add(j, lambda j=j: names.append((j, threading.current_thread().name)))
    g.run(1)
    assert names == [(j, threading.current_thread().name) for j in range(4)]


def test_workers_use_one_torch_thread_and_the_callers_setting_survives():
    seen: list = []
    g = TaskGraph()
    for j in range(4):
        g.add(j, lambda: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        g.run(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1, 1, 1]


def test_the_first_error_stops_the_rest_and_reaches_the_caller():
    ran: list = []
    g = TaskGraph()
    g.add("boom", lambda: 1 / 0)
    g.add("later", lambda: ran.append("later"), after=["boom"])
    with pytest.raises(ZeroDivisionError):
        g.run(2)
    assert ran == []


def test_a_task_must_follow_tasks_already_added_and_keys_are_unique():
    g = TaskGraph()
    g.add("x", lambda: None)
    with pytest.raises(ValueError, match="added twice"):
        g.add("x", lambda: None)
    with pytest.raises(ValueError, match="has not been added"):
        g.add("y", lambda: None, after=["z"])
