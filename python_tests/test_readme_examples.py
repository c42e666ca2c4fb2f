"""The README's examples for library users run as written, and do what their text says.

Every ```python block of the section "## Using diva_ext in your project" is executed; a block
importing a package that is not installed (pytorch-metric-learning) is skipped, naming it. The
checks then read the variables the block left behind.
"""

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from tolerances import SECOND_ORDER, assert_within, unit_roundoff

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Using diva_ext in your project"


def readme_blocks():
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return re.findall(r"```python\n(.*?)```", text[start:end if end >= 0 else None], flags=re.S)


def run_block(source):
    """The block's global variables after running it; skips when it imports a missing package."""
    for module in re.findall(r"^(?:from|import) (\w+)", source, flags=re.M):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the README example needs {module}, not installed")
    namespace = {"__name__": "readme_example"}
    exec(compile(source, f"{README.name} ({SECTION[3:]})", "exec"), namespace)
    return namespace


def block_using(name):
    (block,) = [b for b in readme_blocks() if name in b]
    return block


def test_section_has_the_two_examples():
    blocks = readme_blocks()
    assert len(blocks) == 2, blocks
    assert "pytorch_metric_learning" in blocks[0] and "InfoNCELoss" in blocks[1]


def test_miner_feeds_pytorch_metric_learning_loss():
    ns = run_block(block_using("pytorch_metric_learning"))
    a, p, n = ns["triplets"]
    labels = ns["labels"]
    assert a.numel() > 0 and a.dtype == p.dtype == n.dtype == torch.int64
    assert bool((labels[a] == labels[p]).all()) and bool((a != p).all()), "positives share the anchor's class"
    assert bool((labels[a] != labels[n]).all()), "negatives come from other classes"
    assert torch.isfinite(ns["loss"]) and ns["loss"] > 0
    weight_grad = ns["model"].weight.grad
    assert weight_grad is not None and torch.isfinite(weight_grad).all() and weight_grad.abs().sum() > 0


def test_moco_step_with_info_nce():
    ns = run_block(block_using("InfoNCELoss"))
    assert ns["criterion"].ops == "fused"
    assert torch.isfinite(ns["loss"]) and ns["loss"] > 0  # -log of a softmax probability
    # fill() took the 4 batches of 256 keys, enqueue() then overwrote the oldest 256 rows.
    queue = ns["queue"]
    assert queue.is_full and len(queue) == 1024
    assert torch.equal(queue.negatives()[:256], ns["key"])
    # One SGD step, enc' = enc - lr g, then the EMA key' = m key + (1 - m) enc' from key = enc:
    # key' - enc' = m lr g. Four float32 roundings (lr g, the subtraction, the lerp's two) of
    # values within |key'| + |enc'| + lr |g| each, and SECOND_ORDER for the terms left out.
    lr, m = ns["optimizer"].param_groups[0]["lr"], ns["key_encoder"].momentum
    keys = dict(ns["key_encoder"].encoder.named_parameters())
    for name, param in ns["encoder"].named_parameters():
        g = param.grad.double()
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name
        enc, key = param.detach().double(), keys[name].detach().double()
        bound = SECOND_ORDER * 4 * unit_roundoff(torch.float32) * (key.abs() + enc.abs() + lr * g.abs())
        assert_within(key - enc, m * lr * g, bound, f"EMA after the SGD step ({name})")
