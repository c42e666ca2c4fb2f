"""MoCo's queue and momentum encoder check their settings: integer sizes are integers (not
truncated floats or bools), the momentum is a real number in [0, 1]."""

import pytest
import torch
from torch import nn

from diva_ext.moco import MemoryQueue, MomentumEncoder
from validation_cases import BAD_COUNTS, names

SIZES = [
    ("size", lambda v: MemoryQueue(v, 3)),
    ("dim", lambda v: MemoryQueue(4, v)),
    ("n_key_batches", lambda v: MemoryQueue.for_batches(v, 4, 3)),
    ("batch_size", lambda v: MemoryQueue.for_batches(2, v, 3)),
]


@pytest.mark.parametrize("arg,make", SIZES, ids=[arg for arg, _ in SIZES])
@pytest.mark.parametrize("value,error", BAD_COUNTS)
def test_queue_sizes_are_positive_integers(arg, make, value, error):
    with pytest.raises(error, match=names(arg)):
        make(value)


def test_queue_accepts_integer_like_sizes():
    queue = MemoryQueue.for_batches(torch.tensor(2).item(), 4, 3)
    assert queue.size == 8 and isinstance(queue.size, int)


@pytest.mark.parametrize("value,error", [(True, TypeError), ("0.9", TypeError), (float("nan"), ValueError),
                                         (1.5, ValueError), (-0.1, ValueError)])
def test_momentum_is_a_real_number_in_0_1(value, error):
    with pytest.raises(error, match=names("momentum")):
        MomentumEncoder(nn.Linear(2, 2), momentum=value)
