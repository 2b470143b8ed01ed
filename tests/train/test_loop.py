"""The training loop on real DB imagery: the loss goes down, runs resume, bad input is one clean error."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from earthloc.errors import InputError
from earthloc.models.registry import load_model
from earthloc.train.augment import YearwiseAugment
from earthloc.train.data import ImageCache, load_regions, make_batch
from earthloc.train.loop import TrainConfig, default_frozen, freeze, train
from earthloc.train.loss import NeutralAwareMSLoss, neutral_mask

EARTHLOC = str(Path(sys.executable).with_name("earthloc"))


def test_loss_decreases_on_a_small_real_batch(iss_db):
    torch.manual_seed(0)
    regions = load_regions([iss_db])
    assert all(r.aug_only for r in regions)  # single-year DB: augmentation-only positives
    model = load_model("lite0-gem")
    freeze(model, default_frozen("lite0-gem"))
    model.train()
    cache = ImageCache(160)
    ids = np.arange(8)
    batch = make_batch(regions, ids, 3, cache, np.random.default_rng(0))
    x = YearwiseAugment(64, seed=0, mean=model.preprocessing.mean, std=model.preprocessing.std)(batch)
    x = x.flatten(0, 1)
    labels = torch.arange(8).repeat(3)
    neutral = torch.from_numpy(neutral_mask([regions[i].tile for i in ids]))[labels][:, labels]
    loss_fn = NeutralAwareMSLoss()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(6):
        loss, st = loss_fn(model(x), labels, neutral)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(st.loss)
    assert losses[0] > 0 and losses[-1] < 0.7 * losses[0], losses


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_train_checkpoints_and_resumes(iss_db, tmp_path):
    cfg = TrainConfig(dbs=(str(iss_db),), out=str(tmp_path / "run"), epochs=1, steps_per_epoch=2,
                      batch_regions=4, years=2, image_size=64, load_size=96, progress=False)
    res = train(cfg)
    assert [r["epoch"] for r in res.history] == [0, 1]
    state1 = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state1["epoch"] == 1 and len(state1["steps"]) == 2
    # best_model.pt is a plain state_dict the model registry loads.
    m = load_model("lite0-gem", checkpoint=tmp_path / "run" / "best_model.pt")
    assert m.checkpoint_hash is not None
    # The weights moved away from the start.
    start = torch.load(tmp_path / "run" / "start_model.pt", weights_only=True)
    moved = sum(float((state1["model"][k].float() - v.float()).abs().sum()) for k, v in start.items())
    assert moved > 0
    # Without --resume an existing run folder is refused; with it the run continues after epoch 1.
    with pytest.raises(InputError, match="set resume"):
        train(TrainConfig(**{**cfg.__dict__, "epochs": 2}))
    res2 = train(TrainConfig(**{**cfg.__dict__, "epochs": 2, "resume": True}))
    assert [r["epoch"] for r in res2.history] == [0, 1, 2]
    steps = _rows(tmp_path / "run" / "steps.csv")
    assert [(int(r["epoch"]), int(r["step"])) for r in steps] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(int(r["aug_only"]) == int(r["regions"]) for r in steps)


def test_cli_bad_db_is_one_line_error(tmp_path):
    p = subprocess.run([EARTHLOC, "train", "--db", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().startswith("error:") and "nope" in p.stderr and "Traceback" not in p.stderr


def test_cli_refuses_single_year_heldout(iss_db, tmp_path):
    # A held-out DB needs 2+ years (queries in one year, DB in another).
    p = subprocess.run([EARTHLOC, "train", "--db", str(iss_db), "--val-db", str(iss_db), "--out", str(tmp_path / "o"),
                        "--image-size", "64", "--no-progress"], capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    assert "no DB region with at least 2 year(s)" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_ddp_two_cpu_processes_gloo(iss_db, tmp_path):
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    out = tmp_path / "ddp"
    p = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "earthloc.cli.main", "train",
                        "--db", str(iss_db), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "2",
                        "--batch-regions", "4", "--years", "2", "--image-size", "64", "--load-size", "96",
                        "--device", "cpu", "--threads", "1", "--no-progress"],
                       capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                        "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert "world 2" in p.stdout and "DDP replicas in sync: True" in p.stdout
    assert p.stdout.count("epoch 1:") == 1  # rank 0 alone logs
    assert [int(r["epoch"]) for r in _rows(out / "epochs.csv")] == [0, 1]


def test_default_freezing_matches_the_official_trainable_count():
    # Facts section 6: 26,217,284 trainable parameters with conv1/bn1/layer1/layer2 frozen (27,662,212 in all).
    model = load_model("earthloc", pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == 27_662_212
    assert freeze(model, default_frozen("earthloc")) == 26_217_284


@pytest.mark.slow
def test_one_step_of_the_official_architecture(iss_db, tmp_path):
    cfg = TrainConfig(dbs=(str(iss_db),), out=str(tmp_path / "run"), model="earthloc", random_init=True, epochs=1,
                      steps_per_epoch=1, batch_regions=2, years=2, load_size=352, progress=False, clustered=False)
    res = train(cfg)
    assert res.history[-1]["steps"] == 1 and np.isfinite(res.history[-1]["loss"])
    state = torch.load(tmp_path / "run" / "best_model.pt", weights_only=True)
    start = torch.load(tmp_path / "run" / "start_model.pt", weights_only=True)
    # Frozen layers did not move; trained ones did.
    assert torch.equal(state["backbone.model.layer1.0.conv1.weight"], start["backbone.model.layer1.0.conv1.weight"])
    assert not torch.equal(state["fc.weight"], start["fc.weight"])


def test_cli_refuses_an_input_size_the_head_cannot_take(iss_db, tmp_path):
    p = subprocess.run([EARTHLOC, "train", "--db", str(iss_db), "--out", str(tmp_path / "o"), "--model", "lite0-mixvpr",
                        "--image-size", "128", "--no-progress"], capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    assert "only takes 320-px inputs" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "o" / "last.pt").exists()
