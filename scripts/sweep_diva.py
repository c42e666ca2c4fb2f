"""Choose DiVA's own settings of a preset on validation classes carved out of the training classes.

For every point of a grid over the auxiliary task weight alpha (the same for self-similarity,
shared and intra), the DaNCE temperature and the decorrelation weight rho, one run trains the
preset (with ``val_fraction`` held out) on a short budget; then its validation embeddings are
scored under each test-time head weighting (the discriminative head at 1, the three others at
w), which needs no retraining. The margin baseline runs once on the same budget for reference.
The test classes are never embedded: nothing here can be chosen on them.

    .venv/bin/python scripts/sweep_diva.py [--alphas 0.1 0.3] [--temperatures 0.01 0.1]
        [--rhos 0 100] [--head-weights 1 0.5 0.25] [--epochs 4] [--seed 0] [--out docs/results]
        [--set FIELD=JSON ...] [--data-option NAME=VALUE ...]

Writes OUT/sweep_diva.json (every run and score, the budget, the machine's load), OUT/sweep_diva.md
(the table, best first) and OUT/sweep_diva.png; prints the table.
"""

import argparse
import dataclasses
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from tqdm.auto import tqdm

AUXILIARY = ("selfsimilarity", "shared", "intra")


def config_for(preset: str, overrides: Dict[str, Any]):
    from diva_ext.training.config import TrainConfig
    from diva_ext.training.presets import PRESETS

    values = {**TrainConfig().to_dict(), **PRESETS[preset], "preset": preset, **overrides}
    config = TrainConfig.from_dict(values).validate()
    if config.val_fraction <= 0:
        raise ValueError(f"the sweep needs validation classes: preset {preset} has val_fraction 0; pass --val-fraction")
    return config


def train_and_embed_validation(config, dataset_options: Dict[str, Any], progress: bool):
    """Train ``config`` for its epochs (no evaluation: the trainer's would embed the test split)
    and return the validation set's per-head embeddings and labels, plus the run's last record."""
    from diva_ext.training.trainer import DiVATrainer, embed_heads

    trainer = DiVATrainer(config, Path(os.devnull), progress=progress, log=lambda line: None,
                          dataset_options=dataset_options)
    if trainer.val_set is None:  # too few training classes to hold a share out (diva_ext.data.class_subset)
        raise ValueError(f"the sweep needs validation classes: the train split has only "
                         f"{trainer.train_set.num_classes} classes, none could be held out")
    if trainer.contrastive is not None:
        trainer.fill_queue()
    record = {}
    while trainer.epoch < config.epochs:
        record = trainer.train_epoch()
        trainer.epoch += 1
    heads, labels = embed_heads(trainer.model, trainer.val_set, config, trainer.device)
    return heads, labels, record


def score(heads, labels, weights: Optional[Dict[str, float]], recall_at=(1, 2)) -> Dict[str, float]:
    from diva_ext.evaluation import combine_embeddings, evaluate

    weights = {t: 1.0 for t in heads} if weights is None else weights
    return evaluate(combine_embeddings(heads, weights), labels, recall_at=recall_at, backend="torch",
                    progress=False, map_at_r=False)


def sweep(args) -> Dict[str, Any]:
    budget = {"epochs": args.epochs, "milestones": tuple(m for m in args.milestones if m <= args.epochs) or
              (args.epochs,), "eval_every": args.epochs, "seed": args.seed}
    if args.batches_per_epoch:
        budget["batches_per_epoch"] = args.batches_per_epoch
    if args.val_fraction is not None:
        budget["val_fraction"] = args.val_fraction
    if args.pretrained is not None:
        budget["pretrained"] = args.pretrained
    for item in args.set:  # e.g. batch_size=16 for a tiny check
        name, _, value = item.partition("=")
        budget[name] = json.loads(value)
    options = dict(kv.split("=", 1) for kv in args.data_option)
    options = {k: (int(v) if v.lstrip("-").isdigit() else v) for k, v in options.items()}
    grid = [dict(alpha=a, temperature=t, rho=r) for a, t, r in itertools.product(args.alphas, args.temperatures, args.rhos)]
    runs: List[Dict[str, Any]] = []
    start = time.time()
    for point in tqdm([None] + grid, desc="sweep", disable=args.no_progress):
        if point is None:  # the margin baseline, for reference
            overrides = {**budget, "tasks": ("discriminative",)}
        else:
            overrides = {**budget, "temperature": point["temperature"], "rho": point["rho"],
                         **{f"weight_{t}": point["alpha"] for t in AUXILIARY}}
        config = config_for(args.preset, overrides)
        t0 = time.time()
        heads, labels, record = train_and_embed_validation(config, options, progress=not args.no_progress)
        seconds = time.time() - t0
        entry = {"method": "margin baseline" if point is None else "DiVA", **(point or {}),
                 "train_seconds": round(seconds, 1), "load_average": round(os.getloadavg()[0], 2),
                 "grad_norms": record.get("grad_norms", {}), "scores": []}
        if point is None:
            entry["scores"].append({"head_weight": None, **score(heads, labels, None)})
        else:
            entry["heads"] = {t: score({t: h}, labels, None)["recall@1"] for t, h in heads.items()}
            for w in args.head_weights:
                weights = {t: (1.0 if t == "discriminative" else w) for t in heads}
                entry["scores"].append({"head_weight": w, **score(heads, labels, weights)})
        runs.append(entry)
        print(json.dumps({k: v for k, v in entry.items() if k != "grad_norms"}), flush=True)
    example = config_for(args.preset, budget)
    return {"preset": args.preset, "budget": {**budget, "batch_size": example.batch_size,
                                              "val_fraction": example.val_fraction, "pretrained": example.pretrained,
                                              "image_size": example.image_size},
            "data_options": options, "selected_on": "validation classes (held out of the training classes)",
            "total_seconds": round(time.time() - start, 1), "runs": runs}


def rows(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One row per (run, head weighting), best validation R@1 first."""
    out = []
    for run in result["runs"]:
        for s in run["scores"]:
            out.append({"method": run["method"], "alpha": run.get("alpha"), "temperature": run.get("temperature"),
                        "rho": run.get("rho"), "head_weight": s["head_weight"], "recall@1": s["recall@1"],
                        "recall@2": s["recall@2"], "nmi": s["nmi"],
                        "disc_recall@1": run.get("heads", {}).get("discriminative", s["recall@1"])})
    return sorted(out, key=lambda r: -r["recall@1"])


def markdown(result: Dict[str, Any]) -> str:
    b = result["budget"]
    head = (f"Validation classes only (val_fraction {b['val_fraction']} of the training classes), preset "
            f"{result['preset']}, {b['epochs']} epochs, batch {b['batch_size']}, seed {b['seed']}, "
            f"pretrained {b['pretrained']}, one run per point. head weight w: the discriminative head at 1, "
            f"the three auxiliary heads at w in the test-time embedding.\n\n")
    lines = ["| method | alpha | T | rho | w | val R@1 | val R@2 | val NMI | val R@1 disc. head |",
             "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "—" if v is None else f"{v:g}"  # noqa: E731
    for r in rows(result):
        lines.append(f"| {r['method']} | {fmt(r['alpha'])} | {fmt(r['temperature'])} | {fmt(r['rho'])} | "
                     f"{fmt(r['head_weight'])} | {100 * r['recall@1']:.1f} | {100 * r['recall@2']:.1f} | "
                     f"{100 * r['nmi']:.1f} | {100 * r['disc_recall@1']:.1f} |")
    return head + "\n".join(lines) + "\n"


def plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = rows(result)
    labels = [("baseline" if r["method"] != "DiVA" else
               f"a={r['alpha']:g} T={r['temperature']:g} rho={r['rho']:g} w={r['head_weight']:g}") for r in table]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(table) + 1.2))
    colours = ["tab:grey" if r["method"] != "DiVA" else "tab:blue" for r in table]
    ax.barh(range(len(table)), [100 * r["recall@1"] for r in table], color=colours)
    ax.set_yticks(range(len(table)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("validation R@1 (%)")
    ax.set_title(f"DiVA settings on validation classes ({result['preset']}, {result['budget']['epochs']} epochs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small-cpu")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--rhos", type=float, nargs="+", default=[0.0, 100.0])
    parser.add_argument("--head-weights", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--milestones", type=int, nargs="+", default=[3])
    parser.add_argument("--batches-per-epoch", type=int, default=None)
    parser.add_argument("--val-fraction", type=float, default=None, help="default: the preset's")
    parser.add_argument("--pretrained", choices=("none", "synthetic"), default=None, help="default: the preset's")
    parser.add_argument("--data-option", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON",
                        help="other TrainConfig fields for every run, e.g. batch_size=16 (same for all runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    result = sweep(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep_diva.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / "sweep_diva.md").write_text(table)
    plot(result, args.out / "sweep_diva.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
