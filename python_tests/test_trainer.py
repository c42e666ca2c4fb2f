"""The DiVA trainer end to end on tiny data: every dataset kind, determinism, resume, outputs."""

import json

import pytest
import torch

import trees
from dance_error_model import dance_mean_loss, dance_mean_loss_grad_q
from diva_ext.training.config import TrainConfig
from diva_ext.training.presets import PRESETS
from diva_ext.training.trainer import DiVATrainer
from tolerances import SECOND_ORDER, first_order_error_bound

SYNTHETIC = {"num_classes": 6, "images_per_class": 5, "image_size": 16}


def tiny_config(**overrides) -> TrainConfig:
    values = {**TrainConfig().to_dict(), **PRESETS["small-cpu"], "preset": "small-cpu"}
    # From random weights: the preset's pretrained start is tested in test_pretrain_cache.py.
    values.update(epochs=1, batch_size=8, batches_per_epoch=2, queue_batches=2, image_size=16, pretrained="none",
                  rho=10.0, milestones=(1,), recall_at=(1, 2), eval_every=1)
    values.update(overrides)
    return TrainConfig.from_dict(values)


def run(tmp_path, config, dataset_options=None, resume=False):
    trainer = DiVATrainer(config, tmp_path, progress=False, log=lambda line: None,
                          dataset_options=dataset_options if dataset_options is not None else SYNTHETIC)
    if resume:
        trainer.resume()
    return trainer.fit()


@pytest.mark.parametrize("dataset", ["synthetic", "folder", "cub200", "cars196", "sop"])
def test_one_epoch_per_dataset_kind(dataset, tmp_path):
    root, options = None, SYNTHETIC
    if dataset != "synthetic":
        root, options = str(trees.BUILDERS[dataset](tmp_path / "data")), {}
    result = run(tmp_path / "out", tiny_config(dataset=dataset, data_root=root), options)
    (epoch,) = result["epochs"]
    assert torch.isfinite(torch.tensor(epoch["loss"]))
    assert set(epoch["losses"]) == {"discriminative", "selfsimilarity", "shared", "intra", "decorrelation"}
    for key in ("recall@1", "recall@2", "nmi", "map@r"):
        assert 0.0 <= epoch[key] <= 1.0
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["final"]["epoch"] == 1 and written["best"]["epoch"] == 1
    assert written["config"]["dataset"] == dataset
    for name in ("checkpoint.pt", "best.pt", "loss.png", "recall.png"):
        assert (tmp_path / "out" / name).is_file(), name


def test_margin_baseline_trains_only_the_discriminative_head(tmp_path):
    result = run(tmp_path, tiny_config(tasks=("discriminative",)))
    assert set(result["epochs"][0]["losses"]) == {"discriminative"}


def _trajectory(result):
    return [(e["loss"], e["losses"], e.get("recall@1"), e.get("nmi")) for e in result["epochs"]]


def test_same_seed_same_run_other_seed_other_run(tmp_path):
    config = tiny_config(epochs=2)
    first = run(tmp_path / "a", config)
    second = run(tmp_path / "b", config)
    assert _trajectory(first) == _trajectory(second)
    other = run(tmp_path / "c", tiny_config(epochs=2, seed=1))
    assert _trajectory(other) != _trajectory(first)


def test_resume_matches_an_uninterrupted_run(tmp_path):
    straight = run(tmp_path / "straight", tiny_config(epochs=3))
    run(tmp_path / "interrupted", tiny_config(epochs=1))
    resumed = run(tmp_path / "interrupted", tiny_config(epochs=3), resume=True)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]
    assert _trajectory(resumed) == _trajectory(straight)


def test_resume_refuses_other_settings(tmp_path):
    run(tmp_path, tiny_config(epochs=1))
    with pytest.raises(ValueError, match="other settings: lr="):
        run(tmp_path, tiny_config(epochs=2, lr=0.5), resume=True)


@pytest.mark.parametrize("bad,match", [
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"batch_size": 9}, "multiple of samples-per-class"),
    ({"tasks": ("discriminative", "colour")}, "tasks must be distinct names"),
    ({"ops": "magic"}, "ops must be"),
    ({"momentum": 1.0}, "momentum must be in"),
    ({"milestones": (5, 2)}, "milestones"),
    ({"amp": "fp8"}, "amp must be one of"),
    ({"amp": "fp16", "device": "cpu"}, "amp fp16 needs a CUDA device"),
])
def test_bad_settings_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**bad).validate()


def test_reference_ops_train_too(tmp_path):
    result = run(tmp_path, tiny_config(ops="reference"))
    assert torch.isfinite(torch.tensor(result["epochs"][0]["loss"]))


def test_fused_and_reference_ops_give_the_same_loss_on_the_same_batch(generator):
    """On one batch of an untrained model the self-similarity loss (fused DaNCE vs explicit logits)
    and its gradient agree with the float64 loss on the same float32 embeddings, each within its
    own float32 error model (dance_error_model.py); the miners pick the same (a, p) and the margin
    losses on the same triplets are equal.

    Two float32 losses with logits near 1/T = 100 cannot promise 1e-5 of each other: an error of one
    ulp in an inner product moves a logit by 100 ulp, and the fused kernel's two passes round the
    saturated top weight independently (see two_pass in dance_error_model.py)."""
    from diva_ext import reference
    from diva_ext.training import components
    from diva_ext.training.trainer import build_model

    seeds = torch.randint(2**31, (3,), generator=generator).tolist()
    torch.manual_seed(seeds[0])
    fused, ref = tiny_config(ops="fused"), tiny_config(ops="reference")
    model = build_model(fused)
    images, key_images = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    heads = {name: h.detach() for name, h in model(images).items()}
    queue_images = torch.randn(8, 3, 16, 16)
    results = {}
    for name, config in (("fused", fused), ("reference", ref)):
        contrastive = components.Contrastive(config, model, torch.device("cpu"))
        contrastive.enqueue(queue_images)  # the same queue for both
        q = heads["selfsimilarity"].clone().requires_grad_()
        keys = contrastive.keys(key_images)
        loss = contrastive.loss(q, keys)
        (grad,) = torch.autograd.grad(loss, q)
        miner = components.miner("discriminative", config, torch.Generator().manual_seed(seeds[1]))
        a, p, _ = miner(heads["discriminative"], labels)
        n = torch.tensor([(int(i) + 2) % 8 for i in a])  # fixed negatives: the miners' draws differ
        margin = components.margin_loss(config, 4)(heads["discriminative"], labels, (a, p, n))
        results[name] = dict(loss=loss.detach(), grad=grad, a=a, p=p, margin=margin.detach(),
                             inputs=(heads["selfsimilarity"], keys, contrastive.queue.negatives()))
    assert all(torch.equal(x, y) for x, y in zip(results["fused"]["inputs"], results["reference"]["inputs"]))
    assert torch.equal(results["fused"]["a"], results["reference"]["a"])
    assert torch.equal(results["fused"]["p"], results["reference"]["p"])
    assert torch.equal(results["fused"]["margin"], results["reference"]["margin"])

    kw = dict(temperature=fused.temperature, lower_cutoff=fused.lower_cutoff, upper_cutoff=fused.upper_cutoff)
    q64, k64, queue64 = (t.double() for t in results["fused"]["inputs"])
    q64.requires_grad_()
    want = reference.info_nce(q64, k64, queue64, weighting="dance", **kw)[0].mean()
    (want_grad,) = torch.autograd.grad(want, q64)
    for name, out in results.items():
        model_kw = dict(kw, two_pass=name == "fused")
        value_bound = SECOND_ORDER * first_order_error_bound(
            lambda p, *x: dance_mean_loss(p, *x, **model_kw), out["inputs"])
        grad_bound = SECOND_ORDER * first_order_error_bound(
            lambda p, *x: dance_mean_loss_grad_q(p, *x, **model_kw), out["inputs"])
        err = (out["loss"].double() - want).abs()
        assert err <= value_bound, (name, err.item(), value_bound.item())
        grad_err = (out["grad"].double() - want_grad).abs()
        assert (grad_err <= grad_bound).all(), (name, grad_err.max().item(), (grad_err / grad_bound).max().item())
