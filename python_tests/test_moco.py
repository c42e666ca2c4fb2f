"""MoCo machinery: MemoryQueue (ring buffer, fill, checkpoints) and MomentumEncoder (EMA)."""

import pytest
import torch
from torch import nn

from diva_ext.moco import MemoryQueue, MomentumEncoder


def batches(n, b, d, start=0):
    """n batches of b rows; row r of the whole stream is filled with the value start + r."""
    rows = torch.arange(start, start + n * b, dtype=torch.float32)
    return list(rows[:, None].expand(-1, d).clone().split(b))


def held(queue):
    return sorted(queue.negatives()[:, 0].tolist())


def test_queue_fills_then_keeps_the_latest_keys():
    queue = MemoryQueue.for_batches(3, 4, 5)
    assert queue.size == 12 and len(queue) == 0 and queue.negatives().shape == (0, 5)
    stream = batches(5, 4, 5)
    assert queue.fill(stream) == 3
    assert queue.is_full and held(queue) == list(range(12))
    # FIFO: each enqueue replaces the oldest batch.
    queue.enqueue(stream[3])
    assert held(queue) == list(range(4, 16))
    queue.enqueue(stream[4])
    assert held(queue) == list(range(8, 20))


def test_queue_wraps_when_batches_do_not_divide_its_size():
    queue = MemoryQueue(10, 2)
    seen = []
    for batch in batches(7, 3, 2):
        queue.enqueue(batch)
        seen += batch[:, 0].tolist()
        assert len(queue) == min(10, len(seen))
        assert held(queue) == sorted(seen[-10:])


def test_queue_keeps_the_last_keys_of_an_oversized_batch():
    queue = MemoryQueue(4, 3)
    queue.enqueue(batches(1, 2, 3)[0])
    (big,) = batches(1, 9, 3, start=100)
    queue.enqueue(big)
    assert held(queue) == [105.0, 106.0, 107.0, 108.0]
    queue.enqueue(batches(1, 1, 3, start=200)[0])
    assert held(queue) == [106.0, 107.0, 108.0, 200.0]


def test_queue_updates_in_place_and_detaches():
    queue = MemoryQueue(6, 2)
    storage = queue.keys.data_ptr()
    keys = torch.randn(4, 2, requires_grad=True)
    queue.enqueue(keys * 2)
    assert queue.keys.data_ptr() == storage and not queue.keys.requires_grad
    torch.testing.assert_close(queue.negatives(), (keys * 2).detach())
    queue.enqueue(torch.randn(3, 2, dtype=torch.float64))  # converted to the buffer's dtype
    assert queue.keys.dtype == torch.float32


def test_queue_state_dict_round_trip():
    queue = MemoryQueue(7, 3)
    for batch in batches(3, 3, 3):
        queue.enqueue(batch)
    restored = MemoryQueue(7, 3)
    restored.load_state_dict(queue.state_dict())
    assert len(restored) == 7 and torch.equal(restored.keys, queue.keys)
    nxt = batches(1, 3, 3, start=50)[0]
    queue.enqueue(nxt)
    restored.enqueue(nxt)
    assert torch.equal(restored.keys, queue.keys)  # same write position


def test_queue_rejects_bad_shapes():
    with pytest.raises(ValueError, match="size and dim must be >= 1"):
        MemoryQueue(0, 3)
    with pytest.raises(ValueError, match=r"keys must have shape \[n, 3\]"):
        MemoryQueue(4, 3).enqueue(torch.randn(2, 4))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(self.fc(x))


def perturbed(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))
        model.bn.running_mean.add_(torch.randn(3, generator=g))
        model.bn.num_batches_tracked += 5
    return model


@pytest.mark.parametrize("momentum", [0.0, 0.9, 1.0])
def test_momentum_encoder_is_an_ema_of_the_parameters(momentum):
    torch.manual_seed(0)
    model = Net()
    key = MomentumEncoder(model, momentum=momentum)
    before = {n: p.clone() for n, p in key.encoder.named_parameters()}
    perturbed(model, 1)
    key.update(model)
    for name, p in key.encoder.named_parameters():
        want = momentum * before[name] + (1 - momentum) * dict(model.named_parameters())[name]
        torch.testing.assert_close(p, want)
        assert not p.requires_grad
    # Two steps compound: theta_k = m^2 theta_0 + (1 - m^2) theta_q for a fixed model.
    key.update(model)
    for name, p in key.encoder.named_parameters():
        q = dict(model.named_parameters())[name]
        torch.testing.assert_close(p, momentum**2 * before[name] + (1 - momentum**2) * q)


def test_momentum_encoder_buffer_modes():
    torch.manual_seed(0)
    model = Net()
    keys = {mode: MomentumEncoder(model, 0.9, buffers=mode) for mode in ("copy", "ema", "keep")}
    start = model.bn.running_mean.clone()
    perturbed(model, 2)
    for key in keys.values():
        key.update(model)
    torch.testing.assert_close(keys["copy"].encoder.bn.running_mean, model.bn.running_mean)
    torch.testing.assert_close(keys["ema"].encoder.bn.running_mean, 0.9 * start + 0.1 * model.bn.running_mean)
    torch.testing.assert_close(keys["keep"].encoder.bn.running_mean, start)
    assert keys["ema"].encoder.bn.num_batches_tracked == model.bn.num_batches_tracked  # integers: copied


def test_momentum_encoder_forward_has_no_graph_and_is_independent():
    torch.manual_seed(0)
    model = Net()
    key = MomentumEncoder(model, 0.9).eval()
    x = torch.randn(5, 4, requires_grad=True)
    out = key(x)
    assert not out.requires_grad
    torch.testing.assert_close(out, model.eval()(x).detach())
    with torch.no_grad():
        model.fc.weight.zero_()  # the copy is not the model
    assert key.encoder.fc.weight.abs().sum() > 0
    # state_dict holds the copy (a checkpoint restores it).
    other = MomentumEncoder(Net(), 0.9)
    other.load_state_dict(key.state_dict())
    torch.testing.assert_close(other.encoder.fc.weight, key.encoder.fc.weight)


def test_momentum_encoder_errors():
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        MomentumEncoder(Net(), 1.5)
    with pytest.raises(ValueError, match="buffers must be one of"):
        MomentumEncoder(Net(), 0.9, buffers="average")
    with pytest.raises(ValueError, match="parameters do not match"):
        MomentumEncoder(Net(), 0.9).update(nn.Linear(4, 3))
