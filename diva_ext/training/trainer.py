"""The DiVA training loop (docs/design.md §3), read top to bottom as the paper's algorithm:

    heads = model(images)                                   # four normalised 128-d heads
    keys  = momentum_encoder(second view)["selfsimilarity"]
    terms = diva_objective(heads, labels, keys, queue)      # diva_ext.training.objective
    L = disc + a_ssl * DaNCE + a_shared * shared + a_intra * intra + decorrelation
    step Adam; update the momentum encoder (EMA); enqueue the keys.

The objective itself lives in diva_ext.training.objective; this module holds the mechanics
around it (mixed precision, gradient scaling, the non-finite guard, epochs, evaluation,
checkpoints). Under torchrun the batch is the global one: see diva_ext.distributed for what is
gathered and why the step equals the single-process step. Only rank 0 prints and writes files.
"""

import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from diva_ext import data, distributed
from diva_ext.data.class_subset import split_validation_classes
from diva_ext.data.sampler import ClassBalancedBatchSampler
from diva_ext.data.transforms import TwoViews, make_transforms, output_size, selfsimilarity_view_transform
from diva_ext.evaluation import combine_embeddings, evaluate
from diva_ext.losses.adversarial import AdversarialSeparation
from diva_ext.models import DiVAModel
from diva_ext.training import checkpoint as ckpt
from diva_ext.training import components, fingerprint, pretrain
from diva_ext.training.objective import ObjectiveParts, diva_objective, weighted_total
from diva_ext.training.task_gradients import EpochGradientLog, term_gradient_norms, warn_vanishing
from diva_ext.training.config import TrainConfig
from diva_ext.training.devices import resolve_device
from diva_ext.training.plots import plot_history

MARGIN_TASKS = ("discriminative", "shared", "intra")
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
METRICS = "metrics.json"
# The sampler epoch whose batches fill the memory queue (training uses epochs 0, 1, ...).
FILL_EPOCH = 2**31 - 1
# How the best epoch (best.pt, metrics.json's "best") is chosen: on the validation classes when
# the run holds some out (val_fraction), never on the test classes otherwise reported.
BEST_BY = "recall@1 of the combined embedding on the validation classes, the latest of equal epochs"
BEST_BY_WITHOUT_VALIDATION = ("recall@1 of the combined embedding on the test split (no validation classes: "
                              "val_fraction 0), the latest of equal epochs")
# The files of a run: what `fit` refuses to replace unless asked (resume or overwrite).
RUN_FILES = (CHECKPOINT, BEST, METRICS, "loss.png", "recall.png")
# What a checkpoint must hold to be resumed from, and of which type.
RESUME_PARTS = {"config": dict, "data": dict, "epoch": int, "model": dict, "criteria": dict, "optimizer": dict,
                "scheduler": dict, "generator": torch.Tensor, "rng": dict, "history": list}


def dataset_options_of(config: TrainConfig, dataset_options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The options the dataset loader gets: the given ones, and for ``synthetic`` the run's seed
    unless one is given."""
    options = dict(dataset_options or {})
    if config.dataset == "synthetic":
        options.setdefault("seed", config.seed)
    return options


def load_datasets(config: TrainConfig, dataset_options: Optional[Dict[str, Any]] = None):
    """(train set, test set). Training images get the training augmentation; with the
    self-similarity task each also gets a second, independent view for the momentum encoder, in
    the paper's augmentation (selfsimilarity_view_transform), while the first view, which every
    head sees, keeps the training augmentation the margin baseline has too."""
    train_tf, test_tf = make_transforms(config.transform, config.image_size)
    if "selfsimilarity" in config.tasks:
        train_tf = TwoViews(train_tf, selfsimilarity_view_transform(output_size(config.transform, config.image_size)))
    options = dataset_options_of(config, dataset_options)
    train_set = data.load(config.dataset, config.data_root, "train", train_tf, **options)
    test_set = data.load(config.dataset, config.data_root, "test", test_tf, **options)
    return train_set, test_set


def existing_run(out_dir: Path) -> List[str]:
    """Names of the run files already in ``out_dir`` (empty if it holds no run)."""
    return [name for name in RUN_FILES[:3] if (Path(out_dir) / name).exists()]


def build_model(config: TrainConfig) -> DiVAModel:
    return DiVAModel(config.tasks, backbone=config.backbone, embed_dim=config.embed_dim,
                     weights=Path(config.weights) if config.weights else None, frozen_bn=config.frozen_bn)


@torch.no_grad()
def embed_heads(model: DiVAModel, dataset, config: TrainConfig, device: torch.device,
                progress: bool = False):
    """({task: [N, D] head embeddings}, [N] labels) of ``dataset``, in dataset order, on the CPU."""
    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, shuffle=False, num_workers=config.workers)
    chunks: Dict[str, List[torch.Tensor]] = {t: [] for t in model.tasks}
    labels = []
    for images, batch_labels, _ in tqdm(loader, desc="embed", leave=False, disable=not progress):
        for task, head in model(images.to(device)).items():
            chunks[task].append(head.cpu())
        labels.append(batch_labels)
    model.train(was_training)
    return {t: torch.cat(c) for t, c in chunks.items()}, torch.cat(labels)


def combined_embedding(heads: Dict[str, torch.Tensor], config: TrainConfig) -> torch.Tensor:
    """The test embedding: heads weighted (``config.head_weights``), concatenated, re-normalised."""
    return combine_embeddings(heads, {t: float(config.head_weights.get(t, 1.0)) for t in heads})


def embed_dataset(model: DiVAModel, dataset, config: TrainConfig, device: torch.device,
                  progress: bool = False):
    """Test embeddings (combined_embedding) and labels of ``dataset``."""
    heads, labels = embed_heads(model, dataset, config, device, progress)
    return combined_embedding(heads, config), labels


class DiVATrainer:
    """Builds everything from a TrainConfig and trains, evaluates and checkpoints into out_dir."""

    def __init__(self, config: TrainConfig, out_dir: Path, *, progress: bool = True,
                 log: Callable[[str], None] = print, dataset_options: Optional[Dict[str, Any]] = None,
                 overwrite: bool = False):
        """``overwrite``: a run already in ``out_dir`` may be replaced (its files go when this run
        writes its first epoch); without it, ``fit`` refuses such a folder unless resumed."""
        self.config = config.validate()
        self.overwrite, self.resumed = overwrite, False
        self.world = distributed.current_world()
        if config.batch_size % (self.world.size * config.samples_per_class):
            raise ValueError(f"batch-size ({config.batch_size}) must split into {self.world.size} processes "
                             f"x a multiple of samples-per-class ({config.samples_per_class})")
        self.out_dir = Path(out_dir)
        self.progress = progress and self.world.is_main
        self.log = log if self.world.is_main else (lambda line: None)
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)

        self.dataset_options = dataset_options_of(config, dataset_options)
        train_split, self.test_set = load_datasets(config, self.dataset_options)
        self.train_set, self.val_set = split_validation_classes(
            train_split, config.val_fraction, config.seed, make_transforms(config.transform, config.image_size)[1])
        # The whole train split, held-out classes included: a change to any of them refuses a resume.
        self.data_record = fingerprint.data_record(self.dataset_options, train_split, self.test_set,
                                                   [] if self.val_set is None else self.val_set.class_names)
        self.model = build_model(config)
        self.pretraining = self._pretrained_start()
        self.model.to(self.device)
        self.net = self.model  # what the training forward runs: DDP's wrapper when distributed
        if self.world.is_distributed:
            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config.amp]
        self.scaler = torch.amp.GradScaler(self.device.type) if config.amp == "fp16" else None
        tasks = config.tasks
        self.generator = torch.Generator().manual_seed(config.seed + 1)  # mining randomness
        num_classes = self.train_set.num_classes
        self.criteria = nn.ModuleDict({
            t: components.margin_loss(config, num_classes) for t in MARGIN_TASKS if t in tasks
        }).to(self.device)
        self.miners = {t: components.miner(t, config, self.generator) for t in MARGIN_TASKS if t in tasks}
        self.contrastive = None
        if "selfsimilarity" in tasks:
            self.contrastive = components.Contrastive(config, self.model, self.device, gather=distributed.all_gather,
                                                      autocast=self.autocast)
        pairs = [(t, "discriminative") for t in ("selfsimilarity", "shared", "intra") if t in tasks]
        self.adversarial = None
        if pairs and "discriminative" in tasks and config.rho > 0:
            self.adversarial = AdversarialSeparation(pairs, config.rho, dim=config.embed_dim).to(self.device)

        self.objective = ObjectiveParts(
            margins=self.criteria, miners=self.miners, decorrelation=self.adversarial,
            dance=self.contrastive.criterion if self.contrastive is not None else None)

        groups = [
            {"params": list(self.model.parameters()), "lr": config.lr, "weight_decay": config.weight_decay},
            {"params": list(self.criteria.parameters()), "lr": config.beta_lr, "weight_decay": 0.0},
        ]
        if self.adversarial is not None:
            groups.append({"params": list(self.adversarial.parameters()), "lr": config.decorrelation_lr,
                           "weight_decay": 0.0})
        self.optimizer = torch.optim.Adam([g for g in groups if g["params"]])
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(config.milestones), config.gamma)
        self.sampler = ClassBalancedBatchSampler(
            self.train_set.labels, config.batch_size // self.world.size, config.samples_per_class,
            num_batches=config.batches_per_epoch, generator=config.seed,
            num_replicas=self.world.size, rank=self.world.rank,
        )
        self.loader = torch.utils.data.DataLoader(self.train_set, batch_sampler=self.sampler,
                                                  num_workers=config.workers)
        self.history: List[Dict[str, Any]] = []
        self.epoch = 0  # epochs completed
        # Each term's gradient norm at the backbone, every step (task_gradients; off only to
        # measure what it costs, bench/bench_task_gradients.py).
        self.measure_gradients = True
        if self.world.is_distributed:
            # Every module above starts from the same seed on every rank; from here on each rank
            # draws its own augmentations.
            torch.manual_seed(config.seed * 1_000_003 + self.world.rank)

    def _pretrained_start(self) -> Optional[Dict[str, Any]]:
        """With ``pretrained synthetic`` (and no --weights): the backbone starts from the cached
        pretraining for this run's data (rank 0 builds it, the others then read the cache)."""
        if self.config.pretrained != "synthetic" or self.config.weights:
            return None
        settings = pretrain.settings_for(self.config, self.dataset_options)
        entry = None
        if self.world.is_main:
            entry = pretrain.cached_pretrain(settings, progress=self.progress, log=self.log)
        distributed.barrier()
        if entry is None:
            entry = pretrain.cached_pretrain(settings, log=lambda line: None)
        backbone = self.model.backbone
        backbone = getattr(backbone, "module", backbone)  # inside FrozenBatchNormStatistics
        ckpt.load_part(backbone.load_state_dict, entry["backbone"], "pretrained backbone", Path(entry["path"]))
        return {"path": entry["path"], "settings": entry["settings"], "metrics": entry["metrics"]}

    def autocast(self):
        """Mixed precision for the encoders' forward passes (``config.amp``, CUDA only)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    # -- one step -------------------------------------------------------------------------
    def training_step(self, images, labels) -> Dict[str, float]:
        """One step of the objective on a batch. Returns floats: ``loss`` (the total), each term
        by name, ``grad_norm/<term>`` (its weighted gradient's norm at the backbone's output,
        task_gradients) and, with self-similarity, ``positive_similarity`` (mean <query, key>)."""
        key_images = None
        if isinstance(images, (list, tuple)):  # two views: the second feeds the momentum encoder
            images, key_images = images
        features, heads = self._embed_batch(images)
        labels = distributed.all_gather(labels.to(self.device))
        keys = negatives = None
        if self.contrastive is not None:
            keys = self.contrastive.keys(key_images.to(self.device))
            negatives = self.contrastive.queue.negatives()
        terms = diva_objective(heads, labels, keys, negatives, self.objective)
        total = weighted_total(terms, self.config.task_weight)
        norms = term_gradient_norms(terms, features, self.config.task_weight) if self.measure_gradients else {}
        self._optimise(total, terms)
        step = {"loss": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()},
                **{f"grad_norm/{k}": v for k, v in norms.items()}}
        if self.contrastive is not None:
            step["positive_similarity"] = float((heads["selfsimilarity"].detach() * keys).sum(1).mean())
            self.contrastive.after_step(self.model, keys)
        return step

    def _embed_batch(self, images: torch.Tensor):
        """(this process's backbone features, the heads of the global batch in float32, checked finite)."""
        with self.autocast():
            features, heads = self.net(images.to(self.device), return_features=True)
        # The losses run in float32 on the global batch (identity in a single process); they are
        # O(B^2 D), small next to the backbone.
        heads = {t: distributed.all_gather_with_grad(h.float()) for t, h in heads.items()}
        if not bool(torch.stack([torch.isfinite(h).all() for h in heads.values()]).all()):
            # Said here, before a miner's or loss's input check fails on them with less context.
            bad = [t for t, h in heads.items() if not torch.isfinite(h).all()]
            raise FloatingPointError(f"training diverged: the {', '.join(bad)} embeddings are not finite "
                                     f"(epoch {self.epoch + 1}); try a lower --lr")
        return features, heads

    def _optimise(self, total: torch.Tensor, terms: Dict[str, torch.Tensor]) -> None:
        """Backward (scaled under fp16), the losses' own gradients averaged over processes, step."""
        if not torch.isfinite(total):
            raise FloatingPointError(f"training loss is not finite ({ {k: float(v.detach()) for k, v in terms.items()} }, "
                                     f"epoch {self.epoch + 1}); lower --lr, --beta-lr, --decorrelation-lr, --margin, --beta-init or --rho")
        self.optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(total) if self.scaler is not None else total).backward()
        distributed.average_gradients(self._loss_parameters())
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def _loss_parameters(self) -> List[torch.Tensor]:
        """Trainable parameters outside the model (and so outside DDP): betas, decorrelation MLPs."""
        params = list(self.criteria.parameters())
        return params + (list(self.adversarial.parameters()) if self.adversarial is not None else [])

    # -- epochs ---------------------------------------------------------------------------
    def train_epoch(self) -> Dict[str, Any]:
        self.model.train()
        self.sampler.set_epoch(self.epoch)
        sums: Dict[str, float] = {}
        gradients, similarity = EpochGradientLog(), []
        count, images_seen, start = 0, 0, time.time()
        bar = tqdm(self.loader, desc=f"epoch {self.epoch + 1}/{self.config.epochs}", leave=False,
                   disable=not self.progress)
        for images, labels, _ in bar:
            step = self.training_step(images, labels)
            gradients.add({k.split("/", 1)[1]: step.pop(k) for k in list(step) if k.startswith("grad_norm/")})
            if "positive_similarity" in step:
                similarity.append(step.pop("positive_similarity"))
            for k, v in step.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            images_seen += labels.shape[0]
            bar.set_postfix(loss=f"{step['loss']:.4f}", img_s=f"{images_seen / (time.time() - start):.0f}")
        self.scheduler.step()
        means = {k: v / max(count, 1) for k, v in sums.items()}
        record = {
            "epoch": self.epoch + 1,
            "loss": means.pop("loss", float("nan")),
            "losses": means,
            "grad_norms": gradients.means(),
            "steps": count,
            "train_seconds": round(time.time() - start, 2),
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        if similarity:
            record["positive_similarity"] = {"first": similarity[0], "mean": sum(similarity) / len(similarity),
                                             "last": similarity[-1]}
        vanishing = gradients.vanishing()
        if vanishing and self.world.is_main:
            warn_vanishing(vanishing, self.epoch + 1, gradients.peaks)
        record["vanishing_gradients"] = vanishing
        return record

    @torch.no_grad()
    def fill_queue(self) -> None:
        """Fill the memory queue before training with momentum-encoder keys of the query view of
        fresh batches, as DiVA's reference code does: batches of an epoch index training never
        reaches (FILL_EPOCH), so the queue does not hold keys of the first epoch's own images."""
        self.sampler.set_epoch(FILL_EPOCH)
        filled = 0
        with tqdm(total=self.config.queue_batches, desc="fill queue", leave=False, disable=not self.progress) as bar:
            while filled < self.config.queue_batches:
                for (query_images, _), _, _ in self.loader:
                    self.contrastive.enqueue(query_images.to(self.device))
                    filled += 1
                    bar.update()
                    if filled == self.config.queue_batches:
                        break

    def evaluate(self, dataset=None) -> Dict[str, float]:
        """Metrics of ``dataset`` (default the test split) for the combined embedding and, under
        ``heads``, for each head on its own (with more than one head); distributed, each rank
        embeds a contiguous shard and rank 0 evaluates the gathered embeddings (in dataset
        order), then shares the metrics."""
        test_set = self.test_set if dataset is None else dataset
        if self.world.is_distributed:
            test_set = torch.utils.data.Subset(test_set, distributed.shard(len(test_set)))
        heads, labels = embed_heads(self.model, test_set, self.config, self.device, self.progress)
        heads = {t: distributed.all_gather_rows(h) for t, h in heads.items()}
        labels = distributed.all_gather_rows(labels)
        metrics = None
        if self.world.is_main:
            def measure(embeddings):
                return evaluate(embeddings, labels, recall_at=self.config.recall_at,
                                backend=self.config.eval_backend, progress=False)

            metrics = measure(combined_embedding(heads, self.config))
            if len(heads) > 1:  # each head alone, beside the combined embedding
                metrics["heads"] = {t: measure(h) for t, h in heads.items()}
        return distributed.broadcast_object(metrics)

    def fit(self) -> Dict[str, Any]:
        """Train up to config.epochs (continuing after a resume); returns the metrics document."""
        replacing = []
        if self.world.is_main:
            replacing = [] if self.resumed else existing_run(self.out_dir)
            if replacing and not self.overwrite:
                raise FileExistsError(f"{self.out_dir} already holds a run ({', '.join(replacing)}); "
                                      "resume it, or pass overwrite=True to replace it")
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.contrastive is not None and self.epoch == 0:
            self.fill_queue()
        while self.epoch < self.config.epochs:
            record = self.train_epoch()
            self.epoch += 1
            if self.epoch % self.config.eval_every == 0 or self.epoch == self.config.epochs:
                start = time.time()
                record.update(self.evaluate())
                if self.val_set is not None:
                    record["validation"] = self.evaluate(self.val_set)
                record["eval_seconds"] = round(time.time() - start, 2)
            self.history.append(record)
            self.log(_epoch_line(record))
            if not self.world.is_main:
                continue
            if replacing:  # the old run stays until this one has an epoch to put in its place
                for name in RUN_FILES:
                    (self.out_dir / name).unlink(missing_ok=True)
                replacing = []
            if "recall@1" in record and _selection_score(record) >= _selection_score(self.best(), -1.0):
                ckpt.save_checkpoint({"config": self.config.to_dict(), "data": self.data_record,
                                      "model": self.model.state_dict(), "metrics": record}, self.out_dir / BEST)
            self.save_checkpoint()
            self.write_metrics()
        return self.metrics()

    # -- results --------------------------------------------------------------------------
    def best(self) -> Dict[str, Any]:
        """The evaluated epoch with the highest combined recall@1 on the validation classes (on
        the test split without them; the latest of equals)."""
        evaluated = [e for e in self.history if "recall@1" in e]
        # max() keeps the first of equals: searched from the end, so that best.pt (written when an
        # epoch matches or beats the best so far) and this record name the same epoch.
        return dict(max(reversed(evaluated), key=_selection_score)) if evaluated else {}

    def metrics(self) -> Dict[str, Any]:
        """The metrics document: config, every epoch, the final and the best evaluated epoch
        (BEST_BY), and with self-similarity the positive-pair similarity at the start and end."""
        evaluated = [e for e in self.history if "recall@1" in e]
        document = {"config": self.config.to_dict(), "pretraining": self.pretraining, "epochs": self.history,
                    "final": dict(evaluated[-1]) if evaluated else {}, "best": self.best(),
                    "best_by": BEST_BY if self.val_set is not None else BEST_BY_WITHOUT_VALIDATION}
        similarity = [e["positive_similarity"] for e in self.history if "positive_similarity" in e]
        if similarity:
            document["positive_similarity"] = {"start": similarity[0]["first"], "end": similarity[-1]["last"]}
        return document

    def write_metrics(self) -> None:
        ckpt.write_json_atomic(_finite(self.metrics()), self.out_dir / METRICS)
        plot_history(self.history, self.out_dir)

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "data": self.data_record,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "criteria": self.criteria.state_dict(),
            "adversarial": self.adversarial.state_dict() if self.adversarial is not None else None,
            "contrastive": self.contrastive.state_dict() if self.contrastive is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "rng": ckpt.rng_states(),
            "history": self.history,
        }

    def save_checkpoint(self) -> None:
        ckpt.save_checkpoint(self.state_dict(), self.out_dir / CHECKPOINT)

    def load_state_dict(self, state: Dict[str, Any], path: Path = Path("checkpoint")) -> None:
        """Continue from ``state`` (a ``state_dict()``); ``path`` names it in errors."""
        ckpt.require_parts(state, path, RESUME_PARTS)
        try:
            saved = TrainConfig.from_dict(state["config"])
        except (ValueError, TypeError) as err:
            raise ValueError(f"checkpoint {path}: its config is unreadable: {ckpt.one_line(err)}") from None
        differ = [k for k, v in saved.to_dict().items()
                  if k not in ("epochs", "device", "workers", "eval_every", "amp") and v != getattr(self.config, k)]
        if differ:
            raise ValueError(f"cannot resume: the checkpoint was trained with other settings: "
                             f"{', '.join(f'{k}={getattr(saved, k)!r}' for k in differ)}")
        ckpt.require_parts(state["data"], path, {"options": dict, "fingerprint": dict})
        if saved.val_fraction > 0 and "validation_classes" not in state["data"]["fingerprint"]:
            # Written by 151a305 alone, which fingerprinted only the classes trained on.
            raise ValueError(f"cannot resume: checkpoint {path} holds validation classes out but its data record "
                             "does not cover them (written before they were fingerprinted); train it again")
        try:
            changed = fingerprint.data_differences(state["data"], self.data_record)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"checkpoint {path}: its data record is unreadable: {ckpt.one_line(err)}") from None
        if changed:
            raise ValueError("cannot resume: the checkpoint was trained on other data: "
                             f"{fingerprint.describe(changed)}")
        parts = [(self.model.load_state_dict, "model", "model weights"),
                 (self.criteria.load_state_dict, "criteria", "margin losses")]
        if self.adversarial is not None:
            parts.append((self.adversarial.load_state_dict, "adversarial", "decorrelation MLPs"))
        if self.contrastive is not None:
            parts.append((self.contrastive.load_state_dict, "contrastive", "momentum encoder and queue"))
        parts += [(self.optimizer.load_state_dict, "optimizer", "optimizer state")]
        if self.scaler is not None and state.get("scaler"):
            parts.append((self.scaler.load_state_dict, "scaler", "gradient scaler"))
        parts += [(self.scheduler.load_state_dict, "scheduler", "learning-rate schedule"),
                  (self.generator.set_state, "generator", "mining generator state"),
                  (ckpt.set_rng_states, "rng", "random generator states")]
        for load, key, what in parts:
            ckpt.load_part(load, state[key], what, path)
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])
        self.resumed = True

    def resume(self, path: Optional[Path] = None) -> None:
        path = Path(path) if path else self.out_dir / CHECKPOINT
        self.load_state_dict(ckpt.load_checkpoint(path), path)


def _selection_score(record: Dict[str, Any], missing: float = float("nan")) -> float:
    """What chooses the best epoch: validation recall@1 where the record has it, else test's."""
    if not record:
        return missing
    return record["validation"]["recall@1"] if "validation" in record else record["recall@1"]


def _finite(obj):
    """JSON has no NaN/inf: write them as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _epoch_line(record: Dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']}", f"loss {record['loss']:.4f}"]
    for key in ("recall@1", "recall@2", "nmi", "map@r"):
        if key in record:
            parts.append(f"{key} {record[key]:.4f}")
    return "  ".join(parts)
