"""Every `diva` failure is one line `diva: error: ...` and a non-zero exit: devices that are not
there, numbers that are not finite or out of range, divergence, typed dataset options, and errors
raised inside DataLoader workers (which still name the file)."""

import pytest
import torch

import trees
from cli_helpers import DATA_OPTIONS, TINY, assert_one_line_error, run_cli
from diva_ext.data import parse_options
from diva_ext.training import checkpoint as ckpt
from diva_ext.training.config import TrainConfig

TINY_FLAGS = TINY[:-(1 + len(DATA_OPTIONS))]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
CUDA_7 = pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has 8 GPUs")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("errors") / "run"
    from diva_ext import cli

    assert cli.main(["train", *TINY, "--out", str(out)]) == 0
    return out


DEVICES = [
    pytest.param("cuda", "no CUDA GPU", marks=no_cuda),
    pytest.param("cuda:7", "'cuda:7'", marks=CUDA_7),
    ("tpu", "device must be cpu, cuda or cuda:INDEX"),
    ("cuda:x", "device must be cpu, cuda or cuda:INDEX"),
    ("", "device must be cpu, cuda or cuda:INDEX"),
]


@pytest.mark.parametrize("device,pattern", DEVICES)
def test_unavailable_or_unknown_device_in_train(device, pattern, tmp_path, capsys):
    result = run_cli(capsys, "train", *TINY, "--device", device, "--out", tmp_path / "o")
    assert_one_line_error(result, pattern)


@pytest.mark.parametrize("device,pattern", DEVICES)
def test_unavailable_or_unknown_device_in_eval(device, pattern, trained_run, capsys):
    result = run_cli(capsys, "eval", "--checkpoint", trained_run / "best.pt", "--device", device, "--no-progress")
    assert_one_line_error(result, pattern)


@no_cuda
def test_eval_of_a_cuda_run_without_a_gpu_says_what_to_do(trained_run, tmp_path, capsys):
    state = ckpt.load_checkpoint(trained_run / "best.pt")
    state["config"]["device"] = "cuda"
    ckpt.save_checkpoint(state, tmp_path / "cuda.pt")
    result = run_cli(capsys, "eval", "--checkpoint", tmp_path / "cuda.pt", "--no-progress")
    assert_one_line_error(result, "no CUDA GPU", "--device cpu")


@pytest.mark.parametrize("flags,pattern", [
    (["--lr", "nan"], "argument --lr: expected a finite number, got 'nan'"),
    (["--lr", "inf"], "argument --lr: expected a finite number, got 'inf'"),
    (["--lr=-inf"], "argument --lr: expected a finite number"),
    (["--beta-lr", "NaN"], "argument --beta-lr: expected a finite number"),
    (["--gamma", "nan"], "argument --gamma: expected a finite number"),
    (["--momentum", "nan"], "argument --momentum: expected a finite number"),
    (["--rho", "inf"], "argument --rho: expected a finite number"),
    (["--margin", "nan"], "argument --margin: expected a finite number"),
    (["--temperature", "1e999"], "argument --temperature: expected a finite number"),
    (["--lower-cutoff", "nan"], "argument --lower-cutoff: expected a finite number"),
    (["--upper-cutoff", "nan"], "argument --upper-cutoff: expected a finite number"),
    (["--head-weights", "shared=nan"], "argument --head-weights: expected a finite number"),
    (["--head-weights", "shared=heavy"], "argument --head-weights: expected a number"),
    (["--dist-timeout", "inf"], "argument --dist-timeout: expected a finite number"),
    (["--dist-timeout", "nan"], "argument --dist-timeout: expected a finite number"),
    (["--lr", "0"], "lr must be a finite number > 0"),
    (["--temperature", "-0.1"], "temperature must be a finite number > 0"),
    (["--weight-decay", "-1"], "weight-decay must be a finite number >= 0"),
    (["--beta-init", "-0.5"], "beta-init must be a finite number >= 0"),
    (["--lower-cutoff", "1.5", "--upper-cutoff", "1.0"], "upper-cutoff (1.0) must be >= lower-cutoff (1.5)"),
    (["--momentum", "1"], "momentum must be in [0, 1)"),
    (["--head-weights", "shared=-1"], "head-weights shared must be a finite number >= 0"),
    (["--seed", "-1"], "seed must be an integer in [0, 4294967295]"),
    (["--seed", str(2**40)], "seed must be an integer in [0, 4294967295]"),
    (["--workers", "-1"], "workers must be an integer >= 0"),
    (["--image-size", "0"], "image-size must be a positive integer"),
    (["--embed-dim", "-3"], "embed-dim must be a positive integer"),
    (["--recall-at", "1", "0"], "recall-at must be a positive integer, got 0"),
    (["--milestones", "0"], "milestones must be a positive integer, got 0"),
])
def test_numbers_must_be_finite_and_in_range(flags, pattern, tmp_path, capsys):
    result = run_cli(capsys, "train", *TINY, *flags, "--out", tmp_path / "o")
    assert_one_line_error(result, pattern)
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


def test_upper_cutoff_may_be_infinite():
    values = {**TrainConfig().to_dict(), "upper_cutoff": float("inf")}
    TrainConfig.from_dict(values).validate()


@pytest.mark.parametrize("field", ["lr", "gamma", "margin", "rho", "temperature", "beta_init", "momentum"])
def test_config_refuses_nan_and_inf(field):
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=field.replace("_", "-")):
            TrainConfig.from_dict({**TrainConfig().to_dict(), field: bad}).validate()


def test_divergence_is_one_line(tmp_path, capsys):
    # Adam moves every weight by about lr in its first step: 1e30 overflows float32 activations.
    result = run_cli(capsys, "train", *TINY, "--lr", "1e30", "--out", tmp_path / "o")
    assert_one_line_error(result, "training diverged", "not finite", "--lr")


def test_data_options_are_parsed_by_the_loaders_types():
    parsed = parse_options("folder", {"verify": "false", "skip_corrupt": "YES"})
    assert parsed == {"verify": False, "skip_corrupt": True}
    for text, value in (("true", True), ("1", True), ("yes", True), ("false", False), ("0", False), ("no", False)):
        assert parse_options("cub200", {"verify": text}) == {"verify": value}
    assert parse_options("synthetic", {"num_classes": "7", "seed": "3"}) == {"num_classes": 7, "seed": 3}


@pytest.mark.parametrize("dataset,options,pattern", [
    ("folder", ["verify=maybe"], "data option verify: expected true/false/1/0/yes/no, got 'maybe'"),
    ("synthetic", ["num_classes=many"], "data option num_classes: expected an integer, got 'many'"),
    ("synthetic", ["num_classes=2.5"], "data option num_classes: expected an integer, got '2.5'"),
    ("synthetic", ["colour=red"], "dataset 'synthetic' has no option(s) colour"),
])
def test_bad_data_options_are_one_line(dataset, options, pattern, tmp_path, capsys):
    root = ["--data-root", trees.folder(tmp_path / "data")] if dataset == "folder" else []
    result = run_cli(capsys, "train", *TINY_FLAGS, "--dataset", dataset, *root, "--out", tmp_path / "o",
                     "--data-option", *options)
    assert_one_line_error(result, pattern)


@pytest.fixture
def tree_with_a_corrupt_test_image(tmp_path):
    root = trees.folder(tmp_path / "data", classes_per_split=4, per_class=3)
    bad = root / "test" / "class_5" / "1.png"
    bad.write_bytes(b"this is not a PNG")
    return root, bad


@pytest.mark.parametrize("text", ["false", "no", "0"])
def test_verify_false_turns_verification_off(text, tree_with_a_corrupt_test_image, tmp_path, capsys):
    root, bad = tree_with_a_corrupt_test_image
    result = run_cli(capsys, "train", *TINY_FLAGS, "--dataset", "folder", "--data-root", root,
                     "--out", tmp_path / "o", "--data-option", f"verify={text}")
    # Not checked at load: the evaluation reads the file and names it.
    line = assert_one_line_error(result, f"cannot read image {bad}")
    assert "unreadable images under" not in line


@pytest.mark.parametrize("text", ["true", "yes", "1"])
def test_verify_true_checks_every_image_first(text, tree_with_a_corrupt_test_image, tmp_path, capsys):
    root, bad = tree_with_a_corrupt_test_image
    result = run_cli(capsys, "train", *TINY_FLAGS, "--dataset", "folder", "--data-root", root,
                     "--out", tmp_path / "o", "--data-option", f"verify={text}")
    assert_one_line_error(result, "1 unreadable images under", str(bad))


def test_error_in_a_dataloader_worker_names_the_file(tree_with_a_corrupt_test_image, tmp_path, capsys):
    root, bad = tree_with_a_corrupt_test_image
    result = run_cli(capsys, "train", *TINY_FLAGS, "--dataset", "folder", "--data-root", root,
                     "--workers", "1", "--out", tmp_path / "o")
    line = assert_one_line_error(result, f"cannot read image {bad}", "DataLoader worker")
    assert "Caught" not in line and "Traceback" not in line
