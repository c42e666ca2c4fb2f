"""Every task trains, visibly: each term's gradient norm at the backbone's output, the warning for
a task whose gradient is ~0 all epoch, per-head metrics, and the best epoch beside the final one."""

import json
import warnings

import pytest
import torch

from diva_ext.evaluation import evaluate
from diva_ext.losses.adversarial import AdversarialSeparation
from diva_ext.training import checkpoint as ckpt
from diva_ext.training import components
from diva_ext.training.objective import ObjectiveParts, diva_objective, term_weight
from diva_ext.training.task_gradients import (EpochGradientLog, VanishingTaskGradientWarning,
                                              term_gradient_norms)
from diva_ext.training.trainer import BEST, DiVATrainer, build_model, embed_heads
from test_trainer import SYNTHETIC, tiny_config
from tolerances import SECOND_ORDER, gamma

TERMS = {"discriminative", "selfsimilarity", "shared", "intra", "decorrelation"}


def trainer_for(tmp_path, config):
    return DiVATrainer(config, tmp_path, progress=False, log=lambda line: None, dataset_options=SYNTHETIC)


def test_gradient_norms_match_the_chain_rule_through_the_heads(generator):
    """Each term's norm at the features against a float64 chain rule written out by hand: the
    term's float32 gradient at each unit head n = u / |u| (u = W f + b), pulled back through the
    normalisation ((g - n <n, g>) / |u|) and the linear layer (W^T) in float64. The float32 path
    differs by its own roundings: D-term dot products and norms, a D-term product with W^T, a sum
    over the heads, bounded element-wise by gamma(3 D + 8) times the same sums of magnitudes."""
    seed = int(torch.randint(2**31, (), generator=generator))
    torch.manual_seed(seed)
    config = tiny_config(rho=50.0, weight_shared=0.7)
    model = build_model(config)
    batch = 8 + 2 * int(torch.randint(3, (), generator=generator))  # odd sizes: 8, 10 or 12 images
    images = torch.randn(batch, 3, 16, 16)
    labels = torch.arange(batch) // 2
    features = model.backbone(images).detach().requires_grad_()
    pre = {t: head(features) for t, head in model.heads.items()}
    heads = {t: torch.nn.functional.normalize(u, dim=-1) for t, u in pre.items()}
    contrastive = components.Contrastive(config, model, torch.device("cpu"))
    contrastive.enqueue(torch.randn(batch, 3, 16, 16))
    keys = contrastive.keys(torch.randn(batch, 3, 16, 16))
    parts = ObjectiveParts(
        margins={t: components.margin_loss(config, batch // 2) for t in ("discriminative", "shared", "intra")},
        miners={t: components.miner(t, config, torch.Generator().manual_seed(seed)) for t in
                ("discriminative", "shared", "intra")},
        dance=contrastive.criterion,
        decorrelation=AdversarialSeparation([(t, "discriminative") for t in ("selfsimilarity", "shared", "intra")],
                                            config.rho, dim=config.embed_dim))
    terms = diva_objective(heads, labels, keys, contrastive.queue.negatives(), parts)
    assert set(terms) == TERMS
    got = term_gradient_norms(terms, features, config.task_weight)
    d = config.embed_dim
    g_model = gamma(3 * d + 8)
    for name, term in terms.items():
        head_grads = torch.autograd.grad(term_weight(name, config.task_weight) * term, list(heads.values()),
                                         retain_graph=True, allow_unused=True)
        want = torch.zeros(features.shape, dtype=torch.float64)
        magnitude = torch.zeros(features.shape, dtype=torch.float64)
        for (task, u), g in zip(pre.items(), head_grads):
            if g is None:
                continue
            u64, g64 = u.detach().double(), g.double()
            norm = u64.norm(dim=1, keepdim=True)
            n = u64 / norm
            w = model.heads[task].weight.detach().double()  # [D, F]
            want += ((g64 - n * (n * g64).sum(1, keepdim=True)) / norm) @ w
            magnitude += ((g64.abs() + n.abs() * (n * g64).abs().sum(1, keepdim=True)) / norm) @ w.abs()
        bound = SECOND_ORDER * g_model * magnitude.norm()
        assert abs(got[name] - want.norm().item()) <= bound.item() + 1e-300, (name, got[name], want.norm().item())
        assert got[name] > 0.0, name


def test_a_detached_term_has_gradient_norm_zero():
    features = torch.randn(6, 5, requires_grad=True)
    terms = {"discriminative": (features ** 2).sum(), "intra": (features.detach() ** 2).sum()}
    norms = term_gradient_norms(terms, features, lambda t: 1.0)
    assert norms["intra"] == 0.0
    # The gradient 2 x is exact in float32; both sides sum the same 30 squares in float64 in their own
    # orders (each within gamma_30, halved by the square root, plus the root's rounding).
    want = (2 * features.detach()).double().norm().item()
    assert norms["discriminative"] == pytest.approx(want, rel=gamma(features.numel() + 2, torch.float64), abs=0)


def test_vanishing_is_relative_to_the_largest_task():
    log = EpochGradientLog()
    log.add({"discriminative": 1.0, "shared": 0.0, "intra": 3e-7, "selfsimilarity": 1e-5})
    log.add({"discriminative": 2.0, "shared": 0.0, "intra": 1e-7, "selfsimilarity": 0.0})
    assert sorted(log.vanishing()) == ["intra", "shared"]
    assert log.means()["discriminative"] == 1.5


def test_a_zero_weight_task_is_warned_about_and_recorded(tmp_path):
    trainer = trainer_for(tmp_path, tiny_config(weight_intra=0.0))
    with pytest.warns(VanishingTaskGradientWarning, match="intra") as caught:
        result = trainer.fit()
    (epoch,) = result["epochs"]
    assert set(epoch["grad_norms"]) == TERMS
    assert epoch["grad_norms"]["intra"] == 0.0
    assert "intra" in epoch["vanishing_gradients"]
    for task in ("discriminative", "shared", "decorrelation"):
        assert epoch["grad_norms"][task] > 0.0, task
        assert task not in epoch["vanishing_gradients"]
        assert not any(f" {task} (" in str(w.message) for w in caught), task
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["epochs"][0]["grad_norms"]["intra"] == 0.0


def test_every_head_is_evaluated_alone_beside_the_combined_embedding(tmp_path):
    trainer = trainer_for(tmp_path, tiny_config())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VanishingTaskGradientWarning)
        result = trainer.fit()
    final = result["final"]
    assert set(final["heads"]) == {"discriminative", "selfsimilarity", "shared", "intra"}
    heads, labels = embed_heads(trainer.model, trainer.test_set, trainer.config, trainer.device)
    for task, metrics in final["heads"].items():
        alone = evaluate(heads[task], labels, recall_at=trainer.config.recall_at,
                         backend=trainer.config.eval_backend, progress=False)
        assert metrics == alone, task
    baseline = trainer_for(tmp_path / "baseline", tiny_config(tasks=("discriminative",))).fit()
    assert "heads" not in baseline["final"]  # one head: it is the combined embedding


@pytest.mark.parametrize("recalls,best_epoch", [((0.5, 0.7, 0.6), 2), ((0.4, 0.4, 0.3), 2)])
def test_best_and_final_epochs_are_kept_apart(tmp_path, monkeypatch, recalls, best_epoch):
    """A made-up recall per epoch: the best epoch (the latest of equals) is recorded, its weights
    are in best.pt, and the final epoch is kept too."""
    # Without validation classes the evaluated split chooses (their case: test_validation_classes.py).
    trainer = trainer_for(tmp_path, tiny_config(epochs=3, tasks=("discriminative",), val_fraction=0.0))
    weights = {}

    def made_up_evaluation():
        epoch = trainer.epoch
        weights[epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        return {"recall@1": recalls[epoch - 1], "nmi": 0.1 * epoch}

    monkeypatch.setattr(trainer, "evaluate", made_up_evaluation)
    result = trainer.fit()
    assert result["final"]["epoch"] == 3 and result["final"]["recall@1"] == recalls[2]
    assert result["best"]["epoch"] == best_epoch and result["best"]["recall@1"] == max(recalls)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["best"]["epoch"] == best_epoch and written["final"]["epoch"] == 3
    saved = ckpt.load_checkpoint(tmp_path / BEST)
    assert saved["metrics"]["epoch"] == best_epoch
    for name, value in weights[best_epoch].items():
        assert torch.equal(saved["model"][name], value), name
