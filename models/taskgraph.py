"""Run a small graph of dependent tasks on a few threads, each with one torch thread.

A trace is a grid of tasks (each layer's fused forward over each chunk, the gates and
predictions worked out from it). Run in dependency order on worker threads that each use a
single torch thread, layer k+1 reads chunk j while layer k reads chunk j+1, and the gate GEMMs
fill whatever gaps the forwards leave: two cores do useful work the whole time instead of one
2-thread OpenMP team splitting every small per-step matrix-vector product.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Hashable, Iterable

import torch


class TaskGraph:
    """Tasks with dependencies and priorities (lower runs first among the ready ones)."""

    def __init__(self) -> None:
        self._fns: dict[Hashable, Callable[[], None]] = {}
        self._priority: dict[Hashable, tuple] = {}
        self._waiting_on: dict[Hashable, int] = {}
        self._dependents: dict[Hashable, list[Hashable]] = {}

    def add(self, key: Hashable, fn: Callable[[], None], *, after: Iterable[Hashable] = (), priority: tuple = ()) -> None:
        """Add a task; everything it runs after must have been added already (so the insertion
        order is itself a valid sequential order)."""
        if key in self._fns:
            raise ValueError(f"task {key!r} was added twice")
        deps = list(after)
        for d in deps:
            if d not in self._fns:
                raise ValueError(f"task {key!r} runs after {d!r}, which has not been added")
        for d in deps:
            self._dependents[d].append(key)
        self._fns[key] = fn
        self._priority[key] = priority
        self._waiting_on[key] = len(deps)
        self._dependents[key] = []

    def run(self, workers: int) -> None:
        """Run every task; with workers <= 1, in insertion order on the calling thread (its torch
        thread count unchanged). The first error stops the rest and is raised here."""
        if workers <= 1:
            for fn in self._fns.values():
                fn()
            return
        _Run(self, min(workers, len(self._fns))).go()


class _Run:
    def __init__(self, graph: TaskGraph, workers: int) -> None:
        self.graph = graph
        self.workers = workers
        self.lock = threading.Condition()
        self.waiting_on = dict(graph._waiting_on)
        self.ready: list[tuple[tuple, int, Hashable]] = []
        self.order = {key: n for n, key in enumerate(graph._fns)}
        for key, n in self.waiting_on.items():
            if n == 0:
                self._push(key)
        self.unfinished = len(graph._fns)
        self.error: BaseException | None = None

    def _push(self, key: Hashable) -> None:
        heapq.heappush(self.ready, (self.graph._priority[key], self.order[key], key))

    def go(self) -> None:
        grad = torch.is_grad_enabled()  # grad mode is thread-local: carry the caller's over
        caller_threads = torch.get_num_threads()
        threads = [threading.Thread(target=self._work, args=(grad,), name=f"rnnscope-task-{n}", daemon=True)
                   for n in range(self.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Each worker's set_num_threads(1) applies to that thread, but torch also keeps the last
        # value process-wide as the default for threads it meets later: put the caller's back.
        torch.set_num_threads(caller_threads)
        if self.error is not None:
            raise self.error

    def _work(self, grad: bool) -> None:
        torch.set_num_threads(1)  # thread-local: the caller's setting is left as it was
        with torch.set_grad_enabled(grad):
            while True:
                with self.lock:
                    while not self.ready and self.unfinished and self.error is None:
                        self.lock.wait()
                    if self.error is not None or not self.unfinished:
                        return
                    _, _, key = heapq.heappop(self.ready)
                try:
                    self.graph._fns[key]()
                except BaseException as e:  # reaches the caller through go()
                    with self.lock:
                        if self.error is None:
                            self.error = e
                        self.lock.notify_all()
                    return
                with self.lock:
                    self.unfinished -= 1
                    for d in self.graph._dependents[key]:
                        self.waiting_on[d] -= 1
                        if self.waiting_on[d] == 0:
                            self._push(d)
                    self.lock.notify_all()
