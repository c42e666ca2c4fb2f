"""DiVAModel and its backbones: heads, normalisation, frozen BatchNorm statistics, weights files."""

import copy

import pytest
import torch
from torch import nn

from diva_ext.models import TASKS, DiVAModel


def test_heads_are_unit_rows_of_each_task():
    model = DiVAModel(backbone="small", embed_dim=16)
    out = model(torch.randn(3, 3, 32, 32))
    assert set(out) == set(TASKS)
    for emb in out.values():
        assert emb.shape == (3, 16)
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))


def test_subset_of_tasks():
    model = DiVAModel(tasks=["discriminative"], backbone="small")
    assert list(model(torch.randn(2, 3, 32, 32))) == ["discriminative"]


@pytest.mark.parametrize("tasks", [[], ["discriminative", "discriminative"], ["nonsense"]])
def test_bad_tasks(tasks):
    with pytest.raises(ValueError, match="tasks"):
        DiVAModel(tasks=tasks, backbone="small")


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        DiVAModel(backbone="vgg")


def _batchnorms(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def test_resnet50_batchnorm_statistics_stay_frozen_in_training_mode():
    model = DiVAModel(tasks=["discriminative"], backbone="resnet50")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    out = model(torch.randn(2, 3, 64, 64) * 3 + 1)
    out["discriminative"].sum().backward()
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert before.keys() == after.keys() and len(before) > 100
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not bn.training for bn in _batchnorms(model))
    # The affine parameters still learn.
    assert all(bn.weight.requires_grad and bn.weight.grad is not None for bn in _batchnorms(model))
    # A deep copy (the momentum encoder) keeps the behaviour.
    clone = copy.deepcopy(model).train()
    assert all(not bn.training for bn in _batchnorms(clone))


def test_small_backbone_batchnorm_trains():
    model = DiVAModel(backbone="small").train()
    bn = _batchnorms(model)[0]
    before = bn.running_mean.clone()
    model(torch.randn(4, 3, 32, 32) + 2)
    assert not torch.equal(before, bn.running_mean)


def test_resnet50_weights_file(tmp_path):
    import torchvision

    reference = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    model = DiVAModel(tasks=["discriminative"], backbone="resnet50", weights=path)
    inner = model.backbone.module
    assert torch.equal(inner.conv1.weight, reference.conv1.weight)
    assert torch.equal(inner.layer4[2].bn3.running_var, reference.layer4[2].bn3.running_var)


def test_resnet50_bad_weights_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        DiVAModel(tasks=["discriminative"], backbone="resnet50", weights=tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights file"):
        DiVAModel(tasks=["discriminative"], backbone="resnet50", weights=garbage)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="does not match torchvision's resnet50"):
        DiVAModel(tasks=["discriminative"], backbone="resnet50", weights=wrong)
