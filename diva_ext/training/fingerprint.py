"""What a run was trained on, saved with its checkpoints so that resuming on other data is refused.

The record is the dataset options (``--data-option``), per split the image count and the
classes with their image counts, and the names of the validation classes held out of the train
split: cheap to compute from a dataset's ``labels`` and ``class_names`` (no image is read), and
enough to catch another tree, a changed option, or images added or removed. The train split is
fingerprinted whole, before validation classes are held out of it, so that a change to a held-out
class is seen too. It does not see an image whose pixels changed in place.
"""

from typing import Any, Dict, List, Mapping, Sequence

import torch

# Differences named in one message, at most.
_SHOW = 3


def split_fingerprint(dataset) -> Dict[str, Any]:
    counts = torch.bincount(torch.as_tensor(dataset.labels), minlength=len(dataset.class_names))
    return {"images": len(dataset), "class_names": [str(n) for n in dataset.class_names],
            "images_per_class": [int(c) for c in counts]}


def data_record(options: Mapping[str, Any], train_split, test_set, validation_classes: Sequence[str] = ()
                ) -> Dict[str, Any]:
    """The ``data`` entry of a checkpoint: ``train_split`` is the whole train split (validation
    classes included), ``validation_classes`` the names of those held out of it."""
    return {"options": dict(options),
            "fingerprint": {"train": split_fingerprint(train_split), "test": split_fingerprint(test_set),
                            "validation_classes": [str(n) for n in validation_classes]}}


def _option_differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> List[str]:
    unset = "unset"
    return [f"data option {key}={saved.get(key, unset)!r} when trained, {now.get(key, unset)!r} now"
            for key in sorted(set(saved) | set(now)) if saved.get(key, unset) != now.get(key, unset)]


def _split_differences(split: str, saved: Mapping[str, Any], now: Mapping[str, Any]) -> List[str]:
    found = []
    if saved["images"] != now["images"]:
        found.append(f"{split} split: {saved['images']} images when trained, {now['images']} now")
    old_names, new_names = saved["class_names"], now["class_names"]
    if old_names != new_names:
        if len(old_names) != len(new_names):
            found.append(f"{split} split: {len(old_names)} classes when trained, {len(new_names)} now"
                         f"{_named(' (new: ', set(new_names) - set(old_names))}"
                         f"{_named(' (gone: ', set(old_names) - set(new_names))}")
        else:
            i = next(i for i, (a, b) in enumerate(zip(old_names, new_names)) if a != b)
            found.append(f"{split} class {i} was {old_names[i]!r}, now {new_names[i]!r}")
    elif saved["images_per_class"] != now["images_per_class"]:
        i = next(i for i, (a, b) in enumerate(zip(saved["images_per_class"], now["images_per_class"])) if a != b)
        found.append(f"{split} class {old_names[i]!r}: {saved['images_per_class'][i]} images when trained, "
                     f"{now['images_per_class'][i]} now")
    return found


def _named(head: str, names) -> str:
    shown = sorted(names)[:_SHOW]
    return f"{head}{', '.join(map(repr, shown))}{', ...' if len(names) > _SHOW else ''})" if names else ""


def data_differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> List[str]:
    """How the data now differs from the data a checkpoint was trained on (empty: the same)."""
    found = _option_differences(saved["options"], now["options"])
    for split in ("train", "test"):
        found += _split_differences(split, saved["fingerprint"][split], now["fingerprint"][split])
    # Records written before validation classes existed held none out.
    held_out, held_out_now = (r["fingerprint"].get("validation_classes", []) for r in (saved, now))
    if not found and held_out != held_out_now:
        found.append(f"validation classes {held_out} when trained, {held_out_now} now")
    return found


def describe(differences: List[str]) -> str:
    shown = "; ".join(differences[:_SHOW])
    return shown + (f"; and {len(differences) - _SHOW} more" if len(differences) > _SHOW else "")
