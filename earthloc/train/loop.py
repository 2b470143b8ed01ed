"""The training loop: EarthLoc recipe with a switch per trick, checkpoints, resume, validation, DDP.

One step = one batch of ``batch_regions`` regions x ``years`` year slots (official 96 x 4): the regions come
from one k-means cluster (``clustered``), the slots are augmented year-wise (``yearwise``), the MS miner's
negatives on overlapping tiles are dropped (``neutral``). After every epoch: validation R@N on held-out
regions, early stopping on R@5 (``patience``), ``last.pt`` (everything needed to resume) and, when R@5
improved, ``best_model.pt`` (a plain state_dict that ``load_model(name, checkpoint=...)`` reads). Logs:
``epochs.csv`` and ``steps.csv``. Epoch 0 is the untrained start (validation only).

DDP: run under ``torchrun --nproc_per_node N -m earthloc.cli.main train ...``; each process draws its own
batches (rank-seeded), gradients are averaged by DistributedDataParallel (gloo on CPU, nccl on GPU), rank 0
clusters, validates, logs and writes checkpoints, and its decisions are broadcast.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from earthloc.atomic import atomic_path, write_text
from earthloc.errors import InputError
from earthloc.models.registry import load_model
from earthloc.train.augment import YearwiseAugment
from earthloc.train.data import ClusterBatches, ImageCache, encode_regions, load_regions, make_batch
from earthloc.train.datasets import ZOOM_GAP
from earthloc.train.loss import NeutralAwareMSLoss, neutral_mask
from earthloc.train.validate import evaluate, make_valset

# Parameters frozen by default (official: ResNet conv1..layer2; lite0: stem + blocks 0-4, stride <= 8).
DEFAULT_FROZEN = {
    "earthloc": ("backbone.model.conv1.", "backbone.model.bn1.", "backbone.model.layer1.", "backbone.model.layer2."),
    "lite0": ("trunk.net._conv_stem.", "trunk.net._bn0.", *(f"trunk.net._blocks.{i}." for i in range(5))),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on (saved in every checkpoint). Sizes in px, lr per step."""

    dbs: tuple[str, ...]
    out: str
    val_dbs: tuple[str, ...] = ()
    model: str = "lite0-gem"
    init_checkpoint: str | None = None
    random_init: bool = False
    epochs: int = 20
    steps_per_epoch: int = 500
    batch_regions: int = 96
    years: int = 4
    lr: float = 1e-4
    image_size: int | None = None  # default: the model's own input size
    load_size: int | None = None  # images are resized to this before augmentation; default 2.5 x image_size
    clusters: int | None = None
    refresh_epochs: int = 4
    clustered: bool = True
    yearwise: bool = True
    neutral: bool = True
    augment: bool = True
    freeze: tuple[str, ...] | None = None  # parameter-name prefixes; None = the model's default
    patience: int = 10
    max_minutes: float | None = None
    val_rotate: bool = True
    val_seed: int = 0  # fixed apart from ``seed`` so runs with different seeds validate on the same queries
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    resume: bool = False  # continue from out/last.pt; without it an existing last.pt is an error
    progress: bool = True


@dataclass
class TrainResult:
    """What a run produced: per-epoch rows (epoch 0 = the start), the best epoch and its R@N."""

    out: Path
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best: dict = field(default_factory=dict)
    stopped: str = ""


def _dist() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; initialise the process group when world > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("EARTHLOC_DDP_BACKEND") != "gloo" else "gloo"
        dist.init_process_group(backend=backend)
    return rank, world


def _bcast(obj, world: int):
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def freeze(model: torch.nn.Module, prefixes: tuple[str, ...]) -> int:
    """Set requires_grad False on parameters whose name starts with a prefix; returns trainable count."""
    for name, p in model.named_parameters():
        if name.startswith(prefixes):
            p.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def default_frozen(model_name: str) -> tuple[str, ...]:
    """Parameter-name prefixes frozen by default when training ``model_name``."""
    return DEFAULT_FROZEN["earthloc" if model_name == "earthloc" else "lite0"]


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def _device(name: str, rank: int) -> str:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % max(1, torch.cuda.device_count())}"
    return name


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) a training run into ``cfg.out``. Returns the per-epoch history.

    A run that fails before its first epoch is saved (bad input found while validating or clustering)
    leaves no run folder behind, when this call made the folder.
    """
    out = Path(cfg.out)
    fresh = not out.exists()
    try:
        return _train(cfg)
    except BaseException:
        if fresh and _dist()[0] == 0 and out.is_dir() and not (out / "last.pt").exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _train(cfg: TrainConfig) -> TrainResult:
    rank, world = _dist()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    last = out / "last.pt"
    device = _device(cfg.device, rank)

    model = load_model(cfg.model, checkpoint=cfg.init_checkpoint, pretrained=not cfg.random_init)
    size = cfg.image_size or model.image_size
    if size % 32:
        raise InputError(f"image_size {size}", "must be a multiple of 32")
    if size != model.image_size:  # GeM takes any size; MixVPR heads are built for one feature-map size
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, 3, size, size))
        except RuntimeError:
            raise InputError(f"image_size {size}", f"model {cfg.model} only takes {model.image_size}-px inputs "
                                                     "(its head has a fixed spatial size)") from None
    load_size = cfg.load_size or int(round(size * 2.5))
    prep = model.preprocessing
    n_trainable = freeze(model, cfg.freeze if cfg.freeze is not None else default_frozen(cfg.model))
    if n_trainable == 0:
        raise InputError("freeze", "every parameter is frozen; nothing to train")
    model.to(device).train()

    regions = load_regions([Path(d) for d in cfg.dbs])
    region_neutral = torch.from_numpy(neutral_mask([r.tile for r in regions]))
    val_regions = load_regions([Path(d) for d in cfg.val_dbs], min_years=2) if cfg.val_dbs else []
    _check_disjoint(regions, val_regions)
    cache = ImageCache(load_size)
    valset = make_valset(val_regions, seed=cfg.val_seed, rotate=cfg.val_rotate) if val_regions else None

    batches = ClusterBatches(len(regions), cfg.batch_regions, cfg.clusters, cfg.clustered, seed=cfg.seed)
    aug = YearwiseAugment(size, yearwise=cfg.yearwise, enabled=cfg.augment, seed=cfg.seed + 7919 * rank,
                          mean=prep.mean, std=prep.std)
    rng = np.random.default_rng(cfg.seed + 104729 * rank)
    loss_fn = NeutralAwareMSLoss(neutral_aware=cfg.neutral)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=None if device == "cpu" else [device])

    res = TrainResult(out)
    steps_log: list[dict] = []
    start_epoch, elapsed_before, patience_left = 1, 0.0, cfg.patience
    if last.is_file() and not cfg.resume:
        raise InputError(out, "holds a checkpoint (last.pt): set resume to continue it, or use another out folder")
    if cfg.resume and not last.is_file():
        raise InputError(out, "no earlier run to resume there (no last.pt); start a new run instead")
    if last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        if state["config"]["dbs"] != list(cfg.dbs) or state["config"]["model"] != cfg.model:
            raise InputError(last, "checkpoint comes from another run (DBs or model differ); use another out folder")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        batches.assignment = np.asarray(state["assignment"])
        aug.load_state_dict(state["aug"])
        rng.bit_generator.state = state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0]
        res.history, steps_log = state["history"], state["steps"]
        res.best_epoch, res.best = state["best_epoch"], state["best"]
        start_epoch, patience_left, elapsed_before = state["epoch"] + 1, state["patience_left"], state["elapsed_s"]
        if patience_left <= 0:  # the run had stopped early: resuming does not undo that
            res.stopped = f"early stop: no R@5 gain for {cfg.patience} epochs"
        if rank == 0:
            print(f"resuming {out} after epoch {state['epoch']}")
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        row = {"epoch": 0, "steps": 0, "loss": float("nan"), "minutes": 0.0}
        if valset:
            row |= evaluate(model, valset, cache, size, prep.mean, prep.std, device)
            res.best_epoch, res.best = 0, {k: v for k, v in row.items() if "R@" in k}
        res.history.append(row)
        torch.save(model.state_dict(), out / "start_model.pt")
        _write_csv(out / "epochs.csv", res.history)
        write_text(out / "config.json", json.dumps(asdict(cfg), indent=1))

    t0 = time.perf_counter() - elapsed_before
    if rank == 0:
        print(f"train: {len(regions)} regions ({sum(r.aug_only for r in regions)} single-year, aug-only), "
              f"{len(val_regions)} held-out; model {cfg.model} {size}px, {n_trainable:,} trainable params; "
              f"{batches.k} clusters; world {world}; device {device}")
    for epoch in range(start_epoch, cfg.epochs + 1):
        if res.stopped:
            break
        if cfg.clustered and (epoch - 1) % cfg.refresh_epochs == 0:  # resumed mid-period: saved assignment
            desc = None
            if rank == 0:
                deadline = t0 + 60 * cfg.max_minutes if cfg.max_minutes is not None else None
                desc = encode_regions(model, regions, cache, size, prep.mean, prep.std, device=device,
                                      deadline=deadline, progress=cfg.progress)
                if desc is not None:
                    batches.fit(desc)
            if _bcast(rank == 0 and desc is None, world):
                res.stopped = f"time budget of {cfg.max_minutes} min reached (while clustering, before epoch {epoch})"
                break
            batches.assignment = _bcast(batches.assignment, world)
        net.train()
        bar = tqdm(range(cfg.steps_per_epoch), desc=f"epoch {epoch}/{cfg.epochs}", disable=not cfg.progress or rank,
                   unit="step")
        losses, timed_out = [], False
        for step in bar:
            ids = batches.next_batch(rng)
            imgs = aug(make_batch(regions, ids, cfg.years, cache, rng).to(device))  # [Y, B, 3, S, S], on device
            y, b = imgs.shape[:2]
            labels = torch.arange(b).repeat(y)  # slot-major: row y*B + j is region j
            neutral = region_neutral[torch.as_tensor(ids)][:, torch.as_tensor(ids)][labels][:, labels]
            desc = net(imgs.flatten(0, 1).to(device))
            loss, st = loss_fn(desc, labels.to(device), neutral)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(st.loss)
            steps_log.append({"epoch": epoch, "step": step + 1, "loss": st.loss, "pos_pairs": st.pos_pairs,
                              "neg_pairs": st.neg_pairs, "neutral_dropped": st.neutral_dropped,
                              "regions": b, "aug_only": int(sum(regions[i].aug_only for i in ids)),
                              "cluster": int(batches.assignment[ids[0]]), "s": round(time.perf_counter() - t0, 2)})
            bar.set_postfix(loss=f"{st.loss:.4f}", neutral=st.neutral_dropped)
            stop_now = cfg.max_minutes is not None and (time.perf_counter() - t0) / 60 > cfg.max_minutes
            if _bcast(stop_now, world):
                timed_out = True
                break
        bar.close()
        if rank == 0:
            row = {"epoch": epoch, "steps": len(losses), "loss": float(np.mean(losses)) if losses else float("nan"),
                   "minutes": round((time.perf_counter() - t0) / 60, 2)}
            if valset:
                row |= evaluate(model, valset, cache, size, prep.mean, prep.std, device)
                if row["R@5"] > res.best.get("R@5", -1) or (row["R@5"] == res.best.get("R@5") and
                                                            row["R@1"] > res.best.get("R@1", -1)):
                    res.best_epoch, res.best, patience_left = epoch, {k: v for k, v in row.items()
                                                                      if "R@" in k}, cfg.patience
                    _save(model.state_dict(), out / "best_model.pt")
                else:
                    patience_left -= 1
            else:
                _save(model.state_dict(), out / "best_model.pt")
                res.best_epoch = epoch
            res.history.append(row)
            if patience_left <= 0:
                res.stopped = f"early stop: no R@5 gain for {cfg.patience} epochs"
            elif timed_out:
                res.stopped = f"time budget of {cfg.max_minutes} min reached"
            _save({"config": asdict(cfg) | {"dbs": list(cfg.dbs)}, "epoch": epoch, "model": model.state_dict(),
                   "optimizer": opt.state_dict(), "assignment": batches.assignment, "aug": aug.state_dict(),
                   "rng": [rng.bit_generator.state], "history": res.history, "steps": steps_log,
                   "best_epoch": res.best_epoch, "best": res.best, "patience_left": patience_left,
                   "elapsed_s": time.perf_counter() - t0}, last)
            _write_csv(out / "epochs.csv", res.history)
            _write_csv(out / "steps.csv", steps_log)
            print(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in row.items() if k != "epoch"))
        res.stopped = _bcast(res.stopped, world)
    if world > 1:  # DDP keeps replicas identical; check it, cheaply, with one checksum per rank
        total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().cpu()
        sums = [torch.zeros_like(total) for _ in range(world)]
        dist.all_gather(sums, total)
        if rank == 0:
            print(f"DDP replicas in sync: {all(bool(torch.isclose(s, sums[0])) for s in sums)}")
        dist.barrier()
    if rank == 0 and res.stopped:
        print(res.stopped)
    return res


def _save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _check_disjoint(train_regions, val_regions) -> None:
    """Held-out regions must not overlap a training region of comparable resolution (within ``ZOOM_GAP``
    zoom levels), else validation measures memory. A z5 Blue Marble block over a z17 NAIP place shows that
    ground 4,000x coarser, which we do not count as seeing it."""
    if not val_regions:
        return
    tiles = [r.tile for r in train_regions] + [r.tile for r in val_regions]
    m = neutral_mask(tiles)[: len(train_regions), len(train_regions):]
    gap = np.abs(np.array([r.tile.zoom for r in train_regions])[:, None]
                 - np.array([r.tile.zoom for r in val_regions])[None, :])
    m &= gap <= ZOOM_GAP
    if m.any():
        i, j = np.argwhere(m)[0]
        raise InputError(f"{val_regions[j].source}/{val_regions[j].tile.name}",
                         f"held-out region overlaps training region {train_regions[i].source}/"
                         f"{train_regions[i].tile.name}; held-out regions must be disjoint from training")
