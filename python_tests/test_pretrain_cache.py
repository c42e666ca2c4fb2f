"""The pretrained start: classes disjoint from train and test, a cache keyed by the settings that
is reused, refused when corrupt (moved aside, rebuilt), and no user file overwritten."""

import dataclasses

import pytest
import torch

from cli_helpers import assert_one_line_error, run_cli
from diva_ext.data.synthetic import ALL_CLASSES, split_classes
from diva_ext.models.backbones import small_cnn
from diva_ext.training import checkpoint as ckpt
from diva_ext.training import pretrain
from diva_ext.training.pretrain import PretrainConfig, cached_pretrain

# 768 - 2 x 376 = 16 pretraining classes (train_part fixed) of 2 images at 16 px, a 4-channel CNN:
# well under a second.
TINY = PretrainConfig(split_classes=376, train_part="fixed", image_size=16, images_per_class=2, width=4, epochs=1,
                      batch_size=16)


def quiet(line):
    pass


def test_pretraining_classes_are_disjoint_from_train_and_test(generator):
    seed = int(torch.randint(2**31, (), generator=generator))
    num = 1 + int(torch.randint(383, (), generator=generator))
    train, test, pre = (set(split_classes(num, s, seed, "fixed")) for s in ("train", "test", "pretrain"))
    assert len(pre) == len(ALL_CLASSES) - 2 * num
    assert not pre & train and not pre & test and not train & test
    assert len(train | test | pre) == len(ALL_CLASSES)


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(PretrainConfig)])
def test_the_key_changes_with_every_setting(name):
    value = getattr(TINY, name)
    other = dataclasses.replace(TINY, **{name: value * 2 + 1 if isinstance(value, int) else value * 3})
    assert other.key() != TINY.key()
    assert dataclasses.replace(TINY).key() == TINY.key()


def test_a_second_run_reuses_the_cache(tmp_path, monkeypatch):
    first = cached_pretrain(TINY, tmp_path, log=quiet)
    assert first["path"] == str(tmp_path / f"{TINY.key()}.pt")
    monkeypatch.setattr(pretrain, "pretrain", lambda *a, **k: pytest.fail("trained again instead of reading the cache"))
    second = cached_pretrain(TINY, tmp_path, log=quiet)
    assert second["backbone"].keys() == first["backbone"].keys()
    assert all(torch.equal(second["backbone"][k], v) for k, v in first["backbone"].items())


def test_pretraining_leaves_the_global_random_state_alone():
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    pretrain.pretrain(TINY)
    assert torch.equal(torch.rand(3), want)


@pytest.mark.parametrize("damage", ["flip", "truncate", "other settings"])
def test_a_bad_cache_file_is_moved_aside_and_rebuilt(tmp_path, damage):
    path = tmp_path / f"{TINY.key()}.pt"
    good = cached_pretrain(TINY, tmp_path, log=quiet)
    if damage == "other settings":  # a valid file, but not made with these settings
        state = ckpt.load_checkpoint(path)
        state["settings"] = {**state["settings"], "epochs": 7}
        ckpt.save_checkpoint(state, path)
    else:
        data = bytearray(path.read_bytes())
        if damage == "flip":
            data[-10] ^= 0xFF
        else:
            del data[len(data) // 2:]
        path.write_bytes(bytes(data))
    damaged = path.read_bytes()
    with pytest.warns(UserWarning, match="refused"):
        again = cached_pretrain(TINY, tmp_path, log=quiet)
    assert (tmp_path / f"{path.name}.corrupt").read_bytes() == damaged  # kept, not deleted
    assert ckpt.load_checkpoint(path)["settings"] == dataclasses.asdict(TINY)
    assert all(torch.equal(again["backbone"][k], v) for k, v in good["backbone"].items())  # deterministic


def test_diva_pretrain_writes_weights_for_the_small_backbone_and_keeps_a_users_file(tmp_path, capsys):
    flags = ["--split-classes", "376", "--train-part", "fixed", "--image-size", "16", "--images-per-class", "2", "--width", "4",
             "--epochs", "1", "--batch-size", "16", "--cache-dir", tmp_path / "cache", "--no-progress"]
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"a user's file")
    result = run_cli(capsys, "pretrain", *flags, "--out", mine)
    assert_one_line_error(result, "--out", "already exists")
    assert mine.read_bytes() == b"a user's file"
    out = tmp_path / "weights.pt"
    result = run_cli(capsys, "pretrain", *flags, "--out", out)
    assert result.returncode == 0, result.stderr
    cached = cached_pretrain(TINY, tmp_path / "cache", log=quiet)["backbone"]
    model, _ = small_cnn(weights=out, width=4)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in cached.items())


def test_the_trainer_starts_from_the_cached_backbone(tmp_path, monkeypatch):
    from test_trainer import SYNTHETIC, tiny_config
    from diva_ext.training.trainer import DiVATrainer

    monkeypatch.setenv("DIVA_CACHE_DIR", str(tmp_path / "cache"))
    tiny = dataclasses.replace(TINY, width=32)
    monkeypatch.setattr(pretrain, "settings_for", lambda config, options: tiny)
    config = tiny_config(pretrained="synthetic", tasks=("discriminative",))
    built = DiVATrainer(config, tmp_path / "a", progress=False, log=quiet, dataset_options=SYNTHETIC)
    entry = cached_pretrain(tiny, log=quiet)
    for name, value in entry["backbone"].items():
        assert torch.equal(built.model.backbone.state_dict()[name], value), name
    # The cache hit starts the same run as the miss (pretraining leaves torch's random state alone).
    again = DiVATrainer(config, tmp_path / "b", progress=False, log=quiet, dataset_options=SYNTHETIC)
    for (name, a), b in zip(built.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name
