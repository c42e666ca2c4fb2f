"""Named hyperparameter presets. The r50 presets carry the paper's settings (docs/design.md §3);
``small-cpu`` is sized for the embedded synthetic data on a 2-core CPU (a few minutes), and starts,
as the paper does from ImageNet, from a backbone pretrained by classification on synthetic classes
disjoint from the run's (diva_ext.training.pretrain, cached after the first run)."""

from typing import Any, Dict

_PAPER_R50: Dict[str, Any] = dict(
    backbone="resnet50", transform="resnet", image_size=224, embed_dim=128, batch_size=112,
    samples_per_class=2, lr=1e-5, weight_decay=4e-4, beta_lr=5e-4, decorrelation_lr=1e-5,
    temperature=0.01, momentum=0.9, margin=0.2, beta_init=1.2, workers=8,
)

PRESETS: Dict[str, Dict[str, Any]] = {
    "small-cpu": dict(
        backbone="small", pretrained="synthetic", transform="small", image_size=32, batch_size=112, samples_per_class=2,
        epochs=8, milestones=(6,), gamma=0.3, eval_every=2, lr=1e-3, weight_decay=4e-4, beta_lr=5e-4,
        decorrelation_lr=1e-3, weight_selfsimilarity=0.3, weight_shared=0.3, weight_intra=0.3,
        rho=100.0, queue_batches=10, temperature=0.01, momentum=0.9, workers=0, val_fraction=0.2,
    ),
    "cub200-r50": dict(
        _PAPER_R50, dataset="cub200", epochs=350, milestones=(55,), gamma=0.2, weight_selfsimilarity=0.3,
        weight_shared=0.3, weight_intra=0.3, rho=1500.0, queue_batches=30,
    ),
    "cars196-r50": dict(
        _PAPER_R50, dataset="cars196", epochs=350, milestones=(70,), gamma=0.2, weight_selfsimilarity=0.15,
        weight_shared=0.15, weight_intra=0.15, rho=100.0, queue_batches=30,
    ),
    "sop-r50": dict(
        _PAPER_R50, dataset="sop", epochs=150, milestones=(70,), gamma=0.3, weight_selfsimilarity=0.2,
        weight_shared=0.2, weight_intra=0.2, rho=150.0, queue_batches=70,
    ),
}

# The preset a dataset gets when none is named.
DEFAULT_PRESET = {
    "synthetic": "small-cpu",
    "folder": "small-cpu",
    "cub200": "cub200-r50",
    "cars196": "cars196-r50",
    "sop": "sop-r50",
}
