"""The `diva` command: `diva train`, `diva eval` and `diva pretrain` (docs/design.md §5).

Bad arguments, missing data or an unwritable output folder end with one line
`diva: error: ...` and a non-zero exit status, never a traceback.

Under torchrun (`torchrun --nproc_per_node N -m diva_ext.cli train ...`) every process runs the
same command; diva_ext.distributed joins them, and only rank 0 prints and writes.
"""

import argparse
import dataclasses
import math
import os
import sys
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

# Errors that are the user's to fix: reported in one line.
USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, NotADirectoryError, PermissionError,
               OSError, FloatingPointError)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"diva: error: {message}\n")


def _field_type(field: dataclasses.Field):
    """(type, origin, args) of a TrainConfig field, with Optional[X] read as X."""
    from diva_ext.training.config import TrainConfig

    hint = typing.get_type_hints(TrainConfig)[field.name]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    return hint, origin, args


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _finite(text: str) -> float:
    """A float flag's value: NaN and +-inf are refused here, ranges by TrainConfig.validate."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _number_or_inf(text: str) -> float:
    """Like _finite, but +inf is allowed (it means "no cutoff")."""
    if text.strip().lower() in ("inf", "+inf", "infinity"):
        return math.inf
    return _finite(text)


def _key_value(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key, value


def _head_weight(text: str):
    key, value = _key_value(text)
    return key, _finite(value)


_EVAL_BACKEND_HELP = "kNN and k-means of the evaluation: auto (faiss when it imports), torch or faiss"


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    from diva_ext.training.config import config_fields

    explicit = {"dataset", "data_root", "preset", "tasks", "epochs", "batch_size", "seed", "device", "ops"}
    group = parser.add_argument_group("hyperparameters (each overrides the preset)")
    for field in config_fields():
        flag = "--" + field.name.replace("_", "-")
        hint, origin, args = _field_type(field)
        kwargs: Dict[str, Any] = {"default": argparse.SUPPRESS, "dest": field.name}
        target = parser if field.name in explicit else group
        if field.name == "head_weights":
            target.add_argument(flag, nargs="+", type=_head_weight, metavar="HEAD=WEIGHT",
                                help="weight of each head in the test embedding", **kwargs)
        elif origin is tuple:
            target.add_argument(flag, nargs="+", type=args[0], **kwargs)
        elif field.name == "ops":
            target.add_argument(flag, choices=("fused", "reference"), help="fused diva_ext ops or pure PyTorch", **kwargs)
        elif field.name == "amp":
            from diva_ext.training.config import AMP_MODES

            target.add_argument(flag, choices=AMP_MODES, help="mixed precision (CUDA only; default off)", **kwargs)
        elif field.name == "eval_backend":
            from diva_ext.training.config import EVAL_BACKENDS

            target.add_argument(flag, choices=EVAL_BACKENDS, help=_EVAL_BACKEND_HELP, **kwargs)
        elif field.name == "frozen_bn":
            target.add_argument(flag, type=_boolean, metavar="{true,false}",
                                help="freeze BatchNorm statistics (default: for resnet50 only)", **kwargs)
        elif field.name == "dataset":
            from diva_ext.data import available

            target.add_argument(flag, choices=available(), help="default: synthetic (embedded, no download)", **kwargs)
        elif field.name == "preset":
            from diva_ext.training.presets import PRESETS

            target.add_argument(flag, choices=sorted(PRESETS), help="named hyperparameters (default by dataset)", **kwargs)
        elif hint is float:
            kind = _number_or_inf if field.name.endswith("upper_cutoff") else _finite
            target.add_argument(flag, type=kind, metavar="NUMBER", **kwargs)
        else:
            target.add_argument(flag, type=hint, **kwargs)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="diva", description="DiVA deep metric learning on diva_ext's fused operators.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a model (default: the embedded synthetic dataset)")
    _add_config_flags(train)
    train.add_argument("--out", type=Path, default=Path("runs/diva"), help="output folder (default runs/diva)")
    existing = train.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    existing.add_argument("--overwrite", action="store_true",
                          help="replace the run already in OUT (without it, diva train refuses such a folder)")
    train.add_argument("--data-option", nargs="+", type=_key_value, default=[], metavar="NAME=VALUE",
                       help="dataset options, e.g. num_classes=50 for synthetic")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("--dist-timeout", type=_finite, default=None, metavar="SECONDS",
                       help="under torchrun: how long a collective waits for the other processes "
                            "before the job fails (default 600)")

    pre = sub.add_parser("pretrain", help="pretrain the small backbone by classification on synthetic classes "
                                          "disjoint from a run's train and test classes (cached)")
    from diva_ext.training.pretrain import PretrainConfig

    from diva_ext.data.synthetic import TRAIN_PARTS

    for field in _pretrain_fields():
        if field.type in (str, "str"):
            pre.add_argument("--" + field.name.replace("_", "-"), choices=TRAIN_PARTS, default=field.default,
                             dest=field.name)
            continue
        kind = _finite if field.type in (float, "float") else int
        pre.add_argument("--" + field.name.replace("_", "-"), type=kind, default=field.default, dest=field.name,
                         metavar="NUMBER" if kind is _finite else "N")
    pre.add_argument("--cache-dir", type=Path, default=None,
                     help="default $DIVA_CACHE_DIR/pretrained or ~/.cache/diva_ext/pretrained")
    pre.add_argument("--out", type=Path, default=None,
                     help="also write the backbone's state dict here (for --weights); an existing file is kept")
    pre.add_argument("--no-progress", action="store_true")

    ev = sub.add_parser("eval", help="evaluate a saved model on a test split")
    ev.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt or best.pt of a run")
    ev.add_argument("--dataset", default=None, help="default: the dataset the model was trained on")
    ev.add_argument("--data-root", default=None)
    ev.add_argument("--device", default=None)
    ev.add_argument("--data-option", nargs="+", type=_key_value, default=[], metavar="NAME=VALUE",
                    help="dataset options (default: those the model was trained with, on its dataset)")
    ev.add_argument("--out", type=Path, default=None, help="write the metrics as JSON here")
    ev.add_argument("--eval-backend", choices=("auto", "torch", "faiss"), default=None, help=_EVAL_BACKEND_HELP)
    ev.add_argument("--no-progress", action="store_true")
    return parser


def _dataset_options(dataset: str, pairs: Sequence) -> Dict[str, Any]:
    """--data-option NAME=VALUE pairs, each parsed as the type of the loader's option."""
    from diva_ext.data import parse_options

    return parse_options(dataset, dict(pairs))


def _resume_state(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """With --resume, the verified checkpoint in --out (read once: config, data and weights)."""
    from diva_ext.training import checkpoint as ckpt
    from diva_ext.training.trainer import CHECKPOINT, RESUME_PARTS

    if not args.resume:
        return None
    path = args.out / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    state = ckpt.load_checkpoint(path)
    ckpt.require_parts(state, path, RESUME_PARTS)
    return state


def _config_from_args(args: argparse.Namespace, state: Optional[Dict[str, Any]] = None):
    """The run's settings: the preset's (or, resuming, the checkpoint's), overridden by the flags."""
    from diva_ext.training.config import TrainConfig, config_fields
    from diva_ext.training.presets import DEFAULT_PRESET, PRESETS

    given = {f.name: getattr(args, f.name) for f in config_fields() if hasattr(args, f.name)}
    if "head_weights" in given:
        given["head_weights"] = dict(given["head_weights"])
    if state is not None:
        values = _saved_config(state, args.out / "checkpoint.pt").to_dict()
    else:
        dataset = given.get("dataset") or PRESETS.get(given.get("preset", ""), {}).get("dataset", "synthetic")
        preset = given.get("preset") or DEFAULT_PRESET[dataset]
        values = {**TrainConfig().to_dict(), **PRESETS[preset], "preset": preset, "dataset": dataset}
    values.update(given)
    return TrainConfig.from_dict(values).validate()


def _saved_config(state: Dict[str, Any], path: Path):
    from diva_ext.training import checkpoint as ckpt
    from diva_ext.training.config import TrainConfig

    try:
        return TrainConfig.from_dict(state["config"])
    except (ValueError, TypeError) as err:
        raise ValueError(f"checkpoint {path}: its config is unreadable: {ckpt.one_line(err)}") from None


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".diva_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"cannot write to output folder {folder}: {err.strerror or err}") from err


def _print_table(title: str, rows: Dict[str, Dict[str, Any]]) -> None:
    keys = [k for k in next(iter(rows.values())) if k.startswith("recall@") or k in ("nmi", "map@r")]
    width = max(6, *(len(name) for name in rows))
    print(title)
    print("  ".join(["".ljust(width)] + [k.ljust(9) for k in keys]))
    for name, metrics in rows.items():
        print("  ".join([name.ljust(width)] + [f"{metrics[k]:.4f}".ljust(9) for k in keys]))


def _result_rows(result: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The final table of `diva train`: the combined embedding at the final and the best epoch,
    then each head on its own at both."""
    rows = {"final": result["final"], "best": result["best"]}
    for which in ("final", "best"):
        for head, metrics in result[which].get("heads", {}).items():
            rows[f"{which} {head}"] = metrics
    return rows


def _train(args) -> int:
    from diva_ext import distributed

    from diva_ext.training.trainer import existing_run

    present = [] if args.resume or args.overwrite else existing_run(args.out)
    if present:
        raise FileExistsError(f"--out {args.out} already holds a run ({', '.join(present)}); continue it "
                              "with --resume, or replace it with --overwrite")
    state = _resume_state(args)
    config = _config_from_args(args, state)
    timeout = distributed.DEFAULT_TIMEOUT_S if args.dist_timeout is None else args.dist_timeout
    world, device = distributed.init_from_env(config.device, timeout)
    try:
        return _train_in_world(args, dataclasses.replace(config, device=device), world, state)
    finally:
        distributed.shutdown()


def _train_in_world(args, config, world, state) -> int:
    from diva_ext.training.trainer import CHECKPOINT, DiVATrainer

    if world.is_main:
        _check_writable(args.out)
    options = _dataset_options(config.dataset, args.data_option)
    if state is not None:  # resuming: the options trained with, unless given again (then they must agree)
        options = {**state["data"].get("options", {}), **options}
    trainer = DiVATrainer(config, args.out, progress=not args.no_progress, dataset_options=options,
                          overwrite=args.overwrite)
    if state is not None:
        trainer.load_state_dict(state, args.out / CHECKPOINT)
    if not world.is_main:
        trainer.fit()
        return 0
    if world.is_distributed:
        print(f"diva train: {world.size} processes, global batch {config.batch_size} "
              f"({config.batch_size // world.size} per process)", flush=True)
    train_split = trainer.data_record["fingerprint"]["train"]  # the whole split, validation classes included
    held_out = "" if trainer.val_set is None else (
        f"; {trainer.val_set.num_classes} of the {len(train_split['class_names'])} train classes "
        f"({len(trainer.val_set)} images) held out for validation")
    print(f"diva train: {config.dataset} ({train_split['images']} train / {len(trainer.test_set)} test images"
          f"{held_out}), preset {config.preset}, tasks {', '.join(config.tasks)}, ops {config.ops}, out {args.out}",
          flush=True)
    result = trainer.fit()
    if result["final"]:
        chosen_on = "validation" if "validation" in result["best"] else "test"
        _print_table(f"final metrics (epoch {result['final']['epoch']}; best epoch {result['best']['epoch']}, "
                     f"by combined recall@1 on the {chosen_on} classes); 'final'/'best' = the combined embedding, "
                     f"then each head alone:",
                     _result_rows(result))
    print(f"wrote {args.out / 'metrics.json'}, {args.out / 'checkpoint.pt'}, plots in {args.out}")
    return 0


def _eval(args) -> int:
    from diva_ext import data
    from diva_ext.data.transforms import make_transforms
    from diva_ext.evaluation import evaluate
    from diva_ext.training import checkpoint as ckpt
    from diva_ext.training.devices import resolve_device
    from diva_ext.training.trainer import build_model, embed_dataset

    state = ckpt.load_checkpoint(args.checkpoint)
    ckpt.require_parts(state, args.checkpoint, {"config": dict, "model": dict})
    config = _saved_config(state, args.checkpoint)
    if args.device is not None:
        config.device = args.device
    if args.eval_backend is not None:
        config.eval_backend = args.eval_backend
    device = resolve_device(config.device)
    dataset = args.dataset or config.dataset
    root = args.data_root if args.data_root is not None else (config.data_root if dataset == config.dataset else None)
    options = _dataset_options(dataset, args.data_option)
    trained = state.get("data")
    if dataset == config.dataset and isinstance(trained, dict) and isinstance(trained.get("options"), dict):
        options = {**trained["options"], **options}
    if dataset == "synthetic":
        options.setdefault("seed", config.seed)
    _, test_tf = make_transforms(config.transform, config.image_size)
    test_set = data.load(dataset, root, "test", test_tf, **options)
    model = build_model(dataclasses.replace(config, weights=None))
    ckpt.load_part(model.load_state_dict, state["model"], "model weights", args.checkpoint)
    model.to(device)
    embeddings, labels = embed_dataset(model, test_set, config, device, not args.no_progress)
    metrics = evaluate(embeddings, labels, recall_at=config.recall_at, backend=config.eval_backend,
                       progress=not args.no_progress)
    _print_table(f"{dataset} test split ({len(test_set)} images, {test_set.num_classes} classes):", {"test": metrics})
    if args.out:
        ckpt.write_json_atomic({"checkpoint": str(args.checkpoint), "dataset": dataset, **metrics}, args.out)
    return 0


def _pretrain_fields():
    """PretrainConfig's fields that are flags (not ``generator``: the renderer's version, no choice)."""
    from diva_ext.training.pretrain import PretrainConfig

    return [f for f in dataclasses.fields(PretrainConfig) if f.name != "generator"]


def _pretrain(args) -> int:
    import torch

    from diva_ext.training.pretrain import PretrainConfig, cached_pretrain

    if args.out is not None and args.out.exists():
        raise FileExistsError(f"--out {args.out} already exists; diva pretrain does not replace it")
    config = PretrainConfig(**{f.name: getattr(args, f.name) for f in _pretrain_fields()})
    entry = cached_pretrain(config.validate(), args.cache_dir, progress=not args.no_progress)
    for epoch in entry["metrics"]["epochs"]:
        print(f"pretrain epoch {epoch['epoch']}  loss {epoch['loss']:.4f}  train accuracy {epoch['train_accuracy']:.4f}")
    print(f"pretrained backbone: {entry['path']} ({entry['metrics']['classes']} classes, "
          f"{entry['metrics']['images']} images)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "xb") as f:  # "x": never over a file that appeared meanwhile
            torch.save(entry["backbone"], f)
        print(f"wrote the backbone's state dict to {args.out} (use it with --weights)")
    return 0


def _message(err: BaseException) -> str:
    """One line saying what went wrong. An error re-raised from a DataLoader worker carries the
    worker's traceback in its message; its last line is the original message (naming the file)."""
    text = str(err).strip()
    if isinstance(err, KeyError) and err.args and isinstance(err.args[0], str) and "\n" not in err.args[0]:
        text = f"missing key {err.args[0]!r}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if len(lines) > 1 and lines[0].startswith("Caught ") and "worker" in lines[0] and lines[1].startswith("Original"):
        original = lines[-1]
        prefix, sep, rest = original.partition(": ")
        if sep and prefix.replace(".", "").replace("_", "").isalnum():  # "module.ErrorType: message"
            original = rest
        return f"{original} (in {lines[0][len('Caught '):].split(' in ', 1)[-1].rstrip('.')})"
    return lines[0]


def main(argv: Optional[List[str]] = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        return {"train": _train, "eval": _eval, "pretrain": _pretrain}[args.command](args)
    except KeyboardInterrupt:
        print("diva: interrupted; the last finished epoch is in the checkpoint (continue with --resume)",
              file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        print(f"diva: error: {_message(err)}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        from diva_ext.distributed import is_communication_error

        if is_communication_error(err):
            # A peer died, hung past --dist-timeout, or the rendezvous failed: say so in one line.
            print(f"diva: error: distributed training failed on rank {os.environ.get('RANK', 0)} "
                  f"(another process died or timed out?): {_message(err)}", file=sys.stderr)
            return 1
        return _unexpected(err)
    except Exception as err:  # a bug, not the user's doing: still one line, the traceback on request
        return _unexpected(err)


def _unexpected(err: Exception) -> int:
    if os.environ.get("DIVA_TRACEBACK"):
        raise err
    print(f"diva: error: {type(err).__name__}: {_message(err)} (internal error; set DIVA_TRACEBACK=1 for "
          "the traceback)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
