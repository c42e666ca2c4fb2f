"""Checkpoints are data, never code: crafted pickles do not run, changed bytes are refused, a file
of the wrong structure is a one-line error, and a full disk leaves the old checkpoint intact."""

import errno
import hashlib
import io
import json
import os
import shutil

import pytest
import torch

from cli_helpers import DATA_OPTIONS, TINY, assert_one_line_error, run_cli
from diva_ext.training import checkpoint as ckpt


class _CreatesMarker:
    """Unpickling this calls open(marker, "w"): the file appears iff the pickle's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One tiny `diva train` run (checkpoint.pt, best.pt), copied by the tests that change it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    from diva_ext import cli

    assert cli.main(["train", *TINY, "--out", str(out)]) == 0
    return out


def _run_copy(trained_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    return out


def _header_and_payload(path):
    data = path.read_bytes()
    header_end = data.index(b"\n", len(ckpt.MAGIC)) + 1
    return data[:header_end], data[header_end:]


def _forge(path, payload):
    """What an attacker who edits the file does: write a payload with a matching hash."""
    header = json.dumps({"payload_bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()})
    path.write_bytes(ckpt.MAGIC + header.encode() + b"\n" + payload)


def _evil_payload(marker):
    buffer = io.BytesIO()
    torch.save({"config": {}, "model": _CreatesMarker(marker)}, buffer)
    return buffer.getvalue()


def test_round_trip_keeps_tensors_and_values(tmp_path, generator):
    state = {"w": torch.randn(3, 5, generator=generator), "epoch": 4, "history": [{"loss": 0.5}],
             "config": {"tasks": ("a", "b"), "lr": 1e-3, "weights": None}, "rng": ckpt.rng_states()}
    ckpt.save_checkpoint(state, tmp_path / "c.pt")
    back = ckpt.load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(back["w"], state["w"]) and back["epoch"] == 4 and back["history"] == state["history"]
    assert back["config"] == state["config"]
    ckpt.set_rng_states(back["rng"])  # numpy's state comes back through a tensor
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


@pytest.mark.parametrize("forged", [False, True], ids=["plain-pickle", "forged-hash"])
def test_crafted_pickle_does_not_run_in_eval(forged, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    payload = _evil_payload(marker)
    if forged:
        _forge(evil, payload)  # passes the hash check: weights_only must stop it
    else:
        evil.write_bytes(payload)
    result = run_cli(capsys, "eval", "--checkpoint", evil, "--no-progress")
    assert not marker.exists(), "unpickling ran the checkpoint's code"
    assert_one_line_error(result, str(evil))


def test_crafted_pickle_does_not_run_on_resume(trained_run, tmp_path, capsys):
    out = _run_copy(trained_run, tmp_path)
    marker = tmp_path / "code-ran"
    _forge(out / "checkpoint.pt", _evil_payload(marker))
    result = run_cli(capsys, "train", *TINY, "--epochs", "2", "--resume", "--out", out)
    assert not marker.exists(), "unpickling ran the checkpoint's code"
    assert_one_line_error(result, str(out / "checkpoint.pt"))


def _flip_bytes(path, count, generator):
    header, payload = _header_and_payload(path)
    payload = bytearray(payload)
    where = torch.randperm(len(payload), generator=generator)[:count]
    for i in where.tolist():
        payload[i] ^= 0xFF
    path.write_bytes(header + bytes(payload))


def test_flipped_bytes_are_refused_by_eval(trained_run, tmp_path, generator, capsys):
    out = _run_copy(trained_run, tmp_path)
    _flip_bytes(out / "best.pt", 5000, generator)
    result = run_cli(capsys, "eval", "--checkpoint", out / "best.pt", "--no-progress",
                     "--data-option", *DATA_OPTIONS)
    assert_one_line_error(result, str(out / "best.pt"), "content hash does not match")


def test_one_flipped_byte_is_refused_on_resume(trained_run, tmp_path, generator, capsys):
    out = _run_copy(trained_run, tmp_path)
    _flip_bytes(out / "checkpoint.pt", 1, generator)
    result = run_cli(capsys, "train", *TINY, "--epochs", "2", "--resume", "--out", out)
    assert_one_line_error(result, str(out / "checkpoint.pt"), "content hash does not match")


def test_truncated_checkpoint_is_refused(trained_run, tmp_path, capsys):
    out = _run_copy(trained_run, tmp_path)
    data = (out / "best.pt").read_bytes()
    (out / "best.pt").write_bytes(data[: len(data) // 2])
    result = run_cli(capsys, "eval", "--checkpoint", out / "best.pt", "--no-progress")
    assert_one_line_error(result, str(out / "best.pt"), "truncated")


def _valid_config(trained_run):
    return ckpt.load_checkpoint(trained_run / "best.pt")["config"]


@pytest.mark.parametrize("make_state,pattern", [
    (lambda config: {"weights": torch.zeros(2)}, "lacks config, model"),
    (lambda config: {"config": config, "model": [1, 2]}, "model is a list, expected dict"),
    (lambda config: {"config": {**config, "colour": 1}, "model": {}}, "config is unreadable"),
    (lambda config: {"config": config, "model": {"backbone.weight": torch.zeros(3, 3)}}, "model weights does not fit"),
], ids=["no-config", "model-not-a-dict", "unknown-config-key", "wrong-weights"])
def test_wrong_structure_is_one_line_in_eval(make_state, pattern, trained_run, tmp_path, capsys):
    path = tmp_path / "wrong.pt"
    ckpt.save_checkpoint(make_state(_valid_config(trained_run)), path)
    result = run_cli(capsys, "eval", "--checkpoint", path, "--no-progress", "--data-option", *DATA_OPTIONS)
    assert_one_line_error(result, str(path), pattern)


def test_plain_torch_save_dict_is_one_line_in_eval(trained_run, tmp_path, capsys):
    path = tmp_path / "plain.pt"
    torch.save({"config": _valid_config(trained_run), "model": {"w": torch.zeros(2)}}, path)
    result = run_cli(capsys, "eval", "--checkpoint", path, "--no-progress")
    assert_one_line_error(result, str(path), "plain torch.save file")


def test_wrong_structure_is_one_line_on_resume(trained_run, tmp_path, capsys):
    out = _run_copy(trained_run, tmp_path)
    state = ckpt.load_checkpoint(out / "checkpoint.pt")
    state["criteria"] = {"discriminative.beta": torch.zeros(99)}
    ckpt.save_checkpoint(state, out / "checkpoint.pt")
    result = run_cli(capsys, "train", *TINY, "--epochs", "2", "--resume", "--out", out)
    assert_one_line_error(result, str(out / "checkpoint.pt"), "margin losses does not fit")


class _FullDisk:
    """A file object whose writes fail with ENOSPC once ``room`` bytes are written."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            self.f.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_full_disk_keeps_the_old_checkpoint(where, trained_run, tmp_path, capsys, monkeypatch):
    out = _run_copy(trained_run, tmp_path)
    before = {name: (out / name).read_bytes() for name in ("checkpoint.pt", "best.pt")}
    if where == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(ckpt.os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode), 4096))
    else:  # delayed allocation: the error surfaces when the data reaches the disk
        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(ckpt.os, "fsync", fsync)
    result = run_cli(capsys, "train", *TINY, "--epochs", "2", "--resume", "--out", out)
    assert_one_line_error(result, "disk full", "is unchanged")
    for name, data in before.items():
        assert (out / name).read_bytes() == data, f"{name} changed"
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")], "temporary file left behind"
    monkeypatch.undo()
    ckpt.load_checkpoint(out / "checkpoint.pt")  # still verifies
