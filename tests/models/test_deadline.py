"""models/deadline.py: a thread's deadline, and the model loops that stop at it."""

import threading
import time

import pytest

from models import deadline
from models.dynamics import counterfactual, gradient_flow, intervene
from models.errors import RnnscopeError
from models.trace import run_trace, run_traces

from .helpers import TEXT, tiny_model

PAST = -1.0  # seconds from now: a deadline already gone


def test_without_a_deadline_check_never_raises():
    assert deadline.current() is None and deadline.left() is None
    deadline.check()
    deadline.check(None)


def test_check_raises_overdue_past_the_deadline_and_not_before():
    with deadline.within(60):
        deadline.check()
        assert 59 < deadline.left() <= 60
    with deadline.within(PAST), pytest.raises(deadline.Overdue, match="past its deadline"):
        deadline.check()
    assert deadline.current() is None  # the block put the thread's deadline back


def test_an_explicit_deadline_wins_over_the_threads():
    with deadline.within(60):
        with pytest.raises(deadline.Overdue):
            deadline.check(time.monotonic() - 1)
    deadline.check(time.monotonic() + 60)
    with pytest.raises(deadline.Overdue):
        deadline.check(time.monotonic() - 1)


def test_nested_deadlines_keep_the_earlier():
    soon = time.monotonic() + 1
    with deadline.until(soon):
        with deadline.within(3600) as inner:
            assert inner == soon == deadline.current()
        with deadline.until(None):
            assert deadline.current() == soon
        with deadline.until(soon - 0.5) as earlier:
            assert earlier == deadline.current() == soon - 0.5
        assert deadline.current() == soon
    assert deadline.current() is None


def test_a_deadline_belongs_to_its_thread():
    seen = []
    with deadline.within(PAST):
        t = threading.Thread(target=lambda: (seen.append(deadline.current()), deadline.check()))
        t.start()
        t.join()
    assert seen == [None]


def test_overdue_is_not_a_user_error():
    # RnnscopeError means "your input is wrong" (a 422, and a batch retries each text alone);
    # running out of time is the server's doing.
    assert not issubclass(deadline.Overdue, RnnscopeError)


@pytest.mark.parametrize("overlap", [True, False])
def test_a_trace_stops_at_the_deadline_in_its_worker_threads_too(overlap):
    model, vocab = tiny_model("lstm")
    with deadline.within(PAST), pytest.raises(deadline.Overdue):
        run_traces(model, vocab, [TEXT * 4, TEXT], chunk=16, overlap=overlap)
    assert run_trace(model, vocab, TEXT, chunk=16).surprisal_bits.shape == (len(TEXT),)  # no deadline: as before


def test_a_lazy_trace_read_later_stops_at_the_readers_deadline():
    model, vocab = tiny_model("gru")
    tr = run_traces(model, vocab, [TEXT * 3], lazy=True, chunk=16)[0]
    with deadline.within(PAST), pytest.raises(deadline.Overdue):
        tr.states[1].arrays(["z"])
    assert tr.states[1]["z"].shape[0] == len(TEXT) * 3


@pytest.mark.parametrize("run", [
    lambda m, v: intervene(m, v, TEXT, 1, "c", 2, 1.0, start=5),
    lambda m, v: gradient_flow(m, v, TEXT, lookback=20),
    lambda m, v: counterfactual(m, v, TEXT, TEXT.replace('"', ""), 1, "h", 2),
], ids=["intervene", "gradient_flow", "counterfactual"])
def test_the_dynamics_runs_stop_at_the_deadline(run):
    model, vocab = tiny_model("lstm")
    with deadline.within(PAST), pytest.raises(deadline.Overdue):
        run(model, vocab)
    run(model, vocab)
