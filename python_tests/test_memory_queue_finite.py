"""MemoryQueue.enqueue refuses NaN and inf keys: a queued key stays for K / n steps, so one
non-finite row would poison every loss computed against the queue until it is overwritten."""

import pytest
import torch

from diva_ext.moco import MemoryQueue


def _filled(generator, dtype=torch.float32):
    queue = MemoryQueue(6, 3, dtype=dtype)
    queue.enqueue(torch.randn(4, 3, generator=generator))
    return queue


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("rows", [1, 4, 9])  # part of the ring, the wrap-around, more than K
def test_non_finite_keys_are_refused_and_the_queue_is_unchanged(bad, rows, generator):
    queue = _filled(generator)
    before, ptr, count = queue.keys.clone(), queue._ptr, len(queue)
    keys = torch.randn(rows, 3, generator=generator)
    keys[rows // 2, 1] = bad
    with pytest.raises(ValueError, match=r"MemoryQueue.enqueue: keys contains non-finite values"):
        queue.enqueue(keys)
    assert torch.equal(queue.keys, before) and queue._ptr == ptr and len(queue) == count


def test_keys_that_overflow_a_half_precision_queue_are_refused(generator):
    queue = _filled(generator, torch.float16)
    with pytest.raises(ValueError, match=r"keys contains non-finite values"):
        queue.enqueue(torch.full((2, 3), 1e5))  # finite in float32, inf in float16 (max 65504)


def test_finite_keys_still_enqueue(generator):
    queue = _filled(generator)
    keys = torch.randn(3, 3, generator=generator)
    queue.enqueue(keys)
    assert len(queue) == 6 and torch.equal(queue.negatives()[4:6], keys[:2])
