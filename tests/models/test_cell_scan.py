"""The compiled cell recurrence must give what the step-by-step definition gives, bit for bit."""

import numpy as np

from models.cell_scan import cell_recurrence


def step_by_step(f, u, c0):
    c, out = c0.astype(np.float32).copy(), []
    for t in range(f.shape[0]):
        c = (f[t] * c + u[t]).astype(np.float32)
        out.append(c)
    return np.stack(out)


def test_the_scan_equals_the_recurrence_on_contiguous_and_strided_gates():
    rng = np.random.default_rng(0)
    pre = rng.random((300, 4 * 7), dtype=np.float32)  # four gates side by side, as the trace slices them
    f, u = pre[:, 7:14], (pre[:, :7] - 0.5) * 3  # f a strided view, u contiguous
    c0 = rng.standard_normal(7).astype(np.float32)
    got = cell_recurrence(f, u, c0)
    assert got.dtype == np.float32 and got.shape == (300, 7)
    assert np.array_equal(got, step_by_step(f, u, c0))
    assert np.array_equal(cell_recurrence(np.ascontiguousarray(f), u, c0), got)
    one = cell_recurrence(f[:, 3:4], u[:, 3:4], c0[3:4])  # one unit, as a lazy trace's column reads it
    assert np.array_equal(one[:, 0], got[:, 3])


def test_a_forget_gate_of_one_carries_the_sum_and_zero_forgets():
    u = np.ones((5, 2), np.float32)
    f = np.array([[1, 0]] * 5, np.float32)
    got = cell_recurrence(f, u, np.array([10, 10], np.float32))
    assert got[:, 0].tolist() == [11, 12, 13, 14, 15] and got[:, 1].tolist() == [1] * 5
