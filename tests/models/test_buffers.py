"""The buffer pool: mapped arrays that come back for reuse once every view of them is gone."""

import gc

import numpy as np
import pytest

from models.buffers import GRAIN, MIN_POOLED_BYTES, BufferPool


def test_small_arrays_are_plain_numpy_and_never_pooled():
    pool = BufferPool(64 << 20)
    a = pool.empty((10, 10), np.float32)
    assert a.shape == (10, 10) and a.dtype == np.float32 and a.flags.owndata
    del a
    gc.collect()
    assert pool.free_bytes == 0


def test_a_dropped_array_is_reused_only_after_its_last_view_dies():
    pool = BufferPool(64 << 20)
    shape = (MIN_POOLED_BYTES // 4, 2)  # 2 MiB of float32
    a = pool.empty(shape, np.float32)
    a[:] = 7.0
    view = a[5:9]  # a slice outliving the array must keep the memory out of the pool
    del a
    gc.collect()
    assert pool.free_bytes == 0
    assert float(view[0, 0]) == 7.0
    del view
    gc.collect()
    assert pool.free_bytes == 2 * MIN_POOLED_BYTES
    b = pool.empty(shape, np.float16)  # a smaller request in the same range takes the kept region
    assert pool.reused == 1 and pool.free_bytes == 0
    b[:] = 1.5
    assert b.shape == shape and b.dtype == np.float16 and bool(np.all(b == 1.5))


def test_the_pool_keeps_at_most_its_limit_and_a_far_bigger_region_is_not_used_for_a_small_request():
    pool = BufferPool(3 * GRAIN)
    big = pool.empty((4 * GRAIN,), np.uint8)  # larger than the whole limit: dropped, not kept
    del big
    gc.collect()
    assert pool.free_bytes == 0
    arrays = [pool.empty((GRAIN,), np.uint8) for _ in range(4)]
    del arrays
    gc.collect()
    assert pool.free_bytes == 3 * GRAIN  # the fourth region did not fit
    pool.resize(GRAIN)
    assert pool.free_bytes == GRAIN
    wide = BufferPool(64 << 20)
    huge = wide.empty((16 * GRAIN,), np.uint8)
    del huge
    gc.collect()
    small = wide.empty((GRAIN,), np.uint8)  # 16x smaller: a fresh region, the big one stays kept
    assert wide.reused == 0 and wide.free_bytes == 16 * GRAIN
    assert small.size == GRAIN


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_pooled_arrays_hold_what_is_written(dtype):
    pool = BufferPool(64 << 20)
    a = pool.empty((1024, 512), dtype)
    src = np.random.default_rng(0).standard_normal((1024, 512)).astype(dtype)
    a[:] = src
    assert np.array_equal(a, src) and a.flags.writeable and a.flags.c_contiguous
