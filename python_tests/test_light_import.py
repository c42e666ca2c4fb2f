"""The library part of diva_ext imports without the training and evaluation packages.

`import diva_ext` and its operators, miners, losses and MoCo machinery need only torch; matplotlib,
tqdm, torchvision, faiss, scipy and PIL belong to the trainer and evaluation, which import them
when used. Each check runs in a fresh interpreter importing the same diva_ext as this test.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import diva_ext

HEAVY = ("matplotlib", "tqdm", "torchvision", "faiss", "scipy", "PIL")
LIBRARY = ("diva_ext", "diva_ext.ops", "diva_ext.miners", "diva_ext.losses", "diva_ext.moco")


def run_python(source):
    """stdout of `source` run by a fresh interpreter whose first import path holds this diva_ext."""
    package_root = str(Path(diva_ext.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(source)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def loaded(modules, names):
    """The members of `names` loaded in `modules` (a sys.modules key list), submodules included."""
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in modules))


def test_library_imports_load_no_heavy_package():
    # torch itself may load some of them (torch.hub takes tqdm when it is installed), so what
    # counts is what the diva_ext imports add on top of `import torch`.
    out = json.loads(run_python(f"""
        import importlib, json, sys
        import torch
        before = list(sys.modules)
        for name in {LIBRARY!r}:
            importlib.import_module(name)
        print(json.dumps({{"before": before, "after": list(sys.modules), "file": sys.modules["diva_ext"].__file__}}))
    """))
    assert Path(out["file"]).resolve() == Path(diva_ext.__file__).resolve()
    by_torch = loaded(out["before"], HEAVY)
    assert loaded(out["after"], HEAVY) == by_torch, f"diva_ext's library imports loaded {HEAVY} beyond torch's {by_torch}"
    assert not loaded(out["after"], ("matplotlib", "torchvision", "faiss", "scipy"))


def test_library_works_with_heavy_packages_missing():
    # None in sys.modules makes `import tqdm` (and the others) raise ImportError, as on a machine
    # without them, even where they are installed.
    out = run_python(f"""
        import sys
        for name in {HEAVY!r}:
            sys.modules[name] = None
        import torch
        from diva_ext import losses, miners, moco, ops, reference

        x = torch.nn.functional.normalize(torch.randn(12, 8, dtype=torch.float64), dim=1)
        labels = torch.arange(12) % 3
        a, p, n = miners.DistanceWeightedMiner(positives="all")(x, labels)
        assert len(a) == len(p) == len(n) > 0
        assert bool((labels[a] == labels[p]).all()) and bool((labels[a] != labels[n]).all())
        queue = moco.MemoryQueue(16, 8, dtype=torch.float64)
        queue.enqueue(x[:6])
        loss = losses.InfoNCELoss(0.1)(x[:6], x[6:], queue.negatives())
        assert bool(torch.isfinite(loss))
        print("ok")
    """)
    assert out.strip().endswith("ok")


def test_evaluation_and_trainer_are_not_imported_by_the_library():
    # They are the parts that need the optional packages; the library must not pull them in.
    out = json.loads(run_python(f"""
        import importlib, json, sys
        for name in {LIBRARY!r}:
            importlib.import_module(name)
        print(json.dumps(list(sys.modules)))
    """))
    assert not loaded(out, ("diva_ext.evaluation", "diva_ext.training", "diva_ext.data", "diva_ext.cli"))
