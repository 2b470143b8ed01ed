"""The application layer: what ``earthloc locate``, the web app, the demo, the evaluation and the
benchmarks run. The composition of stages is plain code, one function per stage::

    photos = gather_photos([Path("photos/")], metadata=Path("queries.csv"))
    locator = open_locator(Path("out/index"))
    results = localize(locator, photos, LocateOptions(top_k=10, refine=True), progress_file=Path("run.jsonl"))

Per photo: :func:`prepare` (resolve the ISS nadir/altitude, decode the image ONCE with the guarded
loader :func:`earthloc.models.preprocess.load_image`) -> :func:`encode` (a batch of photos, through
the locator's :class:`earthloc.models.encoders.Encoder`, here or on Ray) -> :func:`search` (rank the
DB images of the visible disk) -> :func:`verify` (on by default: check the top 50 candidates by
local features at 4 rotations, re-rank, refine the answer, calibrated confidence;
:mod:`earthloc.refine.verify`) or the older :func:`refine` (every top candidate refined, slow).
Both reuse the decoded photo.

A photo that fails (unreadable image, no nadir/time) becomes a :class:`Localization` with ``error``
set and the others go on. With a progress file (JSON lines, append-only) every FINAL record (refined
when refinement is on) is appended as soon as it exists with the digest of everything that produced it
(:func:`record_key`), and a rerun skips the photos done there with the same inputs.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from earthloc import outputs
from earthloc.errors import InputError
from earthloc.geo.visibility import check_nadir_time
from earthloc.index.identity import ModelIdentity
from earthloc.index.store import Index
from earthloc.locate import Locator
from earthloc.models.encoders import Encoder, LocalEncoder
from earthloc.models.preprocess import load_image
from earthloc.models.registry import load_model
from earthloc.photos import load_photos, photo_from_file
from earthloc.records import Localization, Photo
from earthloc.refine.rerank import DbRefiner, photo_rgb
from earthloc.refine.verify import TOP_K as VERIFY_TOP_K
from earthloc.refine.verify import Verifier

# Per-photo failures a batch records and goes past (anything else stops the run).
PER_PHOTO_ERRORS = (InputError, OSError, ValueError)

OnEvent = Callable[[str, int, int], None]
"""``on_event(stage, done, total)``: ``stage`` is one of :data:`STAGES`; ``done`` photos of ``total``
have passed it (``encoding`` counts photos whose batch is encoded)."""

STAGES = ("decoding", "encoding", "searching", "verifying", "refining", "done")

# Smallest photo side worth searching: the models look at 320 px, a photo under 64 px per side holds
# (upscaled 5x) no landform a DB image could match.
MIN_PHOTO_SIDE_PX = 64


@dataclass(frozen=True)
class LocateOptions:
    """What a localization run does per photo. ``top_k``: candidates kept; ``verify``: verify the
    first ``verify_top_k`` retrieved candidates, re-rank them and refine the answer (needs the
    index's DB images; what ``earthloc locate``, the demo and the web app do by default; off here so
    that library callers such as the retrieval evaluation get retrieval alone); ``refine``: without verification, refine every candidate
    (``refine_top_k``: the first that many) with ``matcher`` and re-rank (the older, slower path)."""

    top_k: int = 10
    refine: bool = False
    matcher: str = "xfeat-lg"
    refine_top_k: int | None = None
    verify: bool = False
    verify_top_k: int = VERIFY_TOP_K

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise InputError("top_k", f"must be >= 1, got {self.top_k}")
        if self.verify_top_k < 1:
            raise InputError("verify_top_k", f"must be >= 1, got {self.verify_top_k}")

    @property
    def search_k(self) -> int:
        """Candidates the search returns: enough for verification to choose from."""
        return max(self.top_k, self.verify_top_k) if self.verify else self.top_k


@dataclass(frozen=True)
class Prepared:
    """A resolved photo (nadir and altitude filled in) and its image, decoded once (RGB)."""

    photo: Photo
    image: Image.Image

    def rgb(self) -> np.ndarray:
        """The photo as ``(H, W, 3)`` uint8 RGB (a view of the decoded image, no second read)."""
        return np.asarray(self.image)


# --- opening and gathering ----------------------------------------------------------------------
def open_locator(index_dir: Path, model: str | None = None, checkpoint: Path | None = None,
                 encoder: Callable[[torch.nn.Module], Encoder] | None = None, **locator_options) -> Locator:
    """A :class:`Locator` over the index folder ``index_dir``.

    ``model``: model name (default: the index's); ``checkpoint``: its weights file. ``encoder``: how
    photos are encoded, a factory taking the model, e.g. ``functools.partial(RayEncoder, address="local")``
    (default: :class:`LocalEncoder` on the CPU). ``locator_options``: :class:`Locator`'s keywords
    (``max_off_nadir_deg``, ``require_area``, ``merge_years``).
    """
    index = Index.open(index_dir)
    net = load_model(model or index.model_name, checkpoint)
    return Locator(index, (encoder or LocalEncoder)(net), **locator_options)


def gather_photos(sources: Sequence[Path], metadata: Path | None = None, images: Path | None = None,
                  nadir: tuple[float, float] | None = None, time: datetime | None = None,
                  altitude_km: float | None = None) -> list[Photo]:
    """Photos from image files, folders (scanned recursively) and CSVs.

    ``metadata`` (a CSV) fills in nadir/time/altitude/ground truth by MRF (= file stem) for photos
    that lack them (with no ``sources``: its photos, images from ``images``). ``nadir`` (lat, lon
    degrees), ``time`` (exact UTC exposure time) and ``altitude_km`` are then set on every photo.
    """
    photos: list[Photo] = []
    for src in map(Path, sources):
        if src.is_dir():
            photos += load_photos(src)
        elif src.suffix.lower() == ".csv":
            photos += load_photos(src, images)
        elif src.is_file():
            photos.append(photo_from_file(src))
        else:
            raise InputError(src, "no such photo, folder or CSV")
    if metadata is not None:
        meta = {p.mrf: p for p in load_photos(metadata, images)}
        photos = list(meta.values()) if not sources else [_fill(p, meta.get(p.mrf)) for p in photos]
    if not photos:
        raise InputError("sources", "no photos given (pass image files, folders or a CSV, or a metadata CSV)")
    fixed: dict = {}
    if nadir is not None:
        fixed["nadir"] = nadir
    if time is not None:
        fixed["time"] = time
    if altitude_km is not None:
        fixed["altitude_km"] = altitude_km
    if fixed:
        photos = [replace(p, **fixed, extra={**p.extra, "time_precision": "exact"} if time else p.extra)
                  for p in photos]
    return photos


def _fill(photo: Photo, known: Photo | None) -> Photo:
    """``photo`` with the fields it lacks taken from ``known`` (the metadata CSV's row)."""
    if known is None:
        return photo
    fields = {f: getattr(known, f) for f in ("time", "nadir", "altitude_km", "centre", "footprint")
              if getattr(photo, f) is None and getattr(known, f) is not None}
    return replace(photo, extra={**known.extra, **photo.extra}, **fields)


# --- the stages ----------------------------------------------------------------------------------
def prepare(locator: Locator, photo: Photo) -> Prepared:
    """Resolve the photo's visible area and decode its image; bad photo -> :class:`InputError`."""
    if photo.path is None:
        raise InputError(photo.mrf, "no image file for this photo")
    path = photo.path
    if photo.nadir is not None and photo.time is not None and photo.extra.get("time_precision") == "exact":
        check_nadir_time(photo.nadir, photo.time, photo.mrf)  # both given: they must agree
    resolved = locator.resolve(photo)
    image = load_image(path)
    if min(image.size) < MIN_PHOTO_SIDE_PX:
        raise InputError(resolved.path, f"{image.width}x{image.height} px is too small to localize (a photo needs "
                                        f"at least {MIN_PHOTO_SIDE_PX} px per side)")
    return Prepared(resolved, image)


def encode(locator: Locator, batches: Iterable[Sequence[Prepared]]) -> Iterator[np.ndarray]:
    """Per batch of prepared photos, in order: descriptors (B, R, D) at the locator's query rotations."""
    return locator.encoder.encode_batches(([p.image for p in b] for b in batches), locator.query_rotations)


def search(locator: Locator, prepared: Prepared, descriptors: np.ndarray, options: LocateOptions) -> Localization:
    """Ranked candidates of one photo from its descriptors (R, D), inside its visible disk."""
    return locator.rank(prepared.photo, descriptors, options.search_k)


def verify(verifier: Verifier, loc: Localization, prepared: Prepared, options: LocateOptions,
           step: Callable[[str], None] = lambda stage: None) -> Localization:
    """``loc`` verified, re-ranked and its answer refined (:class:`earthloc.refine.verify.Verifier`),
    cut to ``options.top_k`` candidates; ``step`` is told "verifying" and "refining" as they finish."""
    if loc.error:
        return loc
    try:
        rgb = photo_rgb(prepared.image, prepared.photo.path)
    except InputError as err:
        return replace(loc, error=str(err))
    out = verifier.verify(loc, rgb, on_stage=step).localization
    return replace(out, candidates=out.candidates[:options.top_k])


def refine(refiner: DbRefiner, loc: Localization, prepared: Prepared, options: LocateOptions) -> Localization:
    """``loc`` refined and re-ranked against its candidates' imagery, with the photo decoded earlier."""
    try:
        rgb = photo_rgb(prepared.image, prepared.photo.path)
    except InputError as err:
        return replace(loc, error=str(err))
    return refiner.refine(loc, rgb, options.refine_top_k)


# --- composition ---------------------------------------------------------------------------------
def localize_stream(locator: Locator, photos: Sequence[Photo], options: LocateOptions = LocateOptions(),
                    on_event: OnEvent | None = None) -> Iterator[Localization]:
    """One final :class:`Localization` per photo, in input order, as each is ready (no progress file).

    Photos are decoded as the encoder asks for batches (``encoder.batch_size`` photos each), so a Ray
    encoder keeps its workers busy while earlier photos are searched and refined here.
    """
    refiner = _refiner(locator, options)
    total, tell = len(photos), on_event or (lambda stage, done, n: None)
    queue: deque[list[Prepared | Localization]] = deque()  # batches handed to the encoder, not yet finished
    counts = dict.fromkeys(STAGES, 0)

    def step(stage: str) -> None:
        counts[stage] += 1
        tell(stage, counts[stage], total)

    def batches() -> Iterator[list[Prepared]]:
        batch: list[Prepared | Localization] = []
        for photo in photos:
            try:
                batch.append(prepare(locator, photo))
            except PER_PHOTO_ERRORS as err:
                batch.append(Localization(photo=photo, candidates=(), error=str(err)))
            step("decoding")
            if sum(isinstance(b, Prepared) for b in batch) >= locator.encoder.batch_size:
                queue.append(batch)
                yield [b for b in batch if isinstance(b, Prepared)]
                batch = []
        if batch:
            queue.append(batch)
            yield [b for b in batch if isinstance(b, Prepared)]

    for desc in encode(locator, batches()):
        batch = queue.popleft()
        good = [b for b in batch if isinstance(b, Prepared)]
        for _ in good:
            step("encoding")
        vectors = iter(desc)  # one (R, D) per prepared photo, in batch order
        for item in batch:
            loc = item if isinstance(item, Localization) else _finish(locator, item, next(vectors), options,
                                                                    refiner, step)
            step("done")
            yield loc


def _refiner(locator: Locator, options: LocateOptions) -> Verifier | DbRefiner | None:
    """What runs after the search: the verifier (default), the older refiner, or nothing."""
    if options.verify:
        return Verifier.open(locator.index.db_dir, locator.index.path, options.verify_top_k)
    return DbRefiner.open(locator.index.db_dir, options.matcher) if options.refine else None


def _finish(locator: Locator, prepared: Prepared, descriptors: np.ndarray, options: LocateOptions,
            refiner: Verifier | DbRefiner | None, step: Callable[[str], None]) -> Localization:
    """The stages after encoding, for one photo: search, then verification (which refines its
    answer) or the older refinement of every candidate."""
    loc = search(locator, prepared, descriptors, options)
    step("searching")
    if isinstance(refiner, Verifier):
        return verify(refiner, loc, prepared, options, step)
    if refiner is not None:
        loc = refine(refiner, loc, prepared, options)
        step("refining")
    return loc


def locate_one(locator: Locator, photo: Photo, options: LocateOptions = LocateOptions(),
               on_event: OnEvent | None = None) -> tuple[Localization, Prepared]:
    """One photo through every stage (what the web app runs per job); a bad photo raises
    :class:`InputError` instead of becoming an error record. Returns the final localization and the
    prepared photo (its decoded image, e.g. to draw it)."""
    refiner = _refiner(locator, options)
    tell = on_event or (lambda stage, done, n: None)
    prepared = prepare(locator, photo)
    if refiner is not None:
        photo_rgb(prepared.image, photo.path)  # too small to match: an error now, not after the search
    tell("decoding", 1, 1)
    desc = next(encode(locator, [[prepared]]))[0]
    tell("encoding", 1, 1)
    loc = _finish(locator, prepared, desc, options, refiner, lambda stage: tell(stage, 1, 1))
    tell("done", 1, 1)
    return loc, prepared


def localize(locator: Locator, photos: Sequence[Photo], options: LocateOptions = LocateOptions(),
             progress_file: Path | None = None, on_event: OnEvent | None = None,
             progress: bool = False) -> list[Localization]:
    """Localize ``photos``, resumably; one final :class:`Localization` per photo, in input order.

    With ``progress_file``, a photo whose final record is there already is not redone when everything
    that produced that record is the same (:func:`record_key`: photo bytes, position, time, altitude,
    options, index and model); otherwise it is recomputed, and failed ones are retried. Each new record
    is appended as soon as it exists. Photos given twice with the same inputs are localized once; with
    different inputs (e.g. a repeated MRF with another nadir) each keeps its own result.
    ``progress``: a progress bar.
    """
    run = run_digest(locator, options)
    keys = [record_key(p, run) for p in photos]
    if progress_file is not None and Path(progress_file).exists():
        outputs.drop_torn_tail(Path(progress_file))  # a kill mid-line: appends must start a fresh line
    done = read_progress(progress_file, options)
    todo = list({k: p for p, k in zip(photos, keys) if k not in done}.items())  # one per distinct key
    _tell_stale(progress_file, [p for _, p in todo])
    results = dict(done)
    stages = [s for s, on in (("verifying", options.verify), ("refining", options.verify or options.refine)) if on]
    bars = {s: tqdm(total=len(todo), desc=s, unit="photo", disable=not progress or not todo, leave=False)
            for s in stages}

    def event(stage: str, n: int, total: int) -> None:
        if stage in bars:
            bars[stage].update(1)
        if on_event is not None:
            on_event(stage, n, total)

    with tqdm(total=len(todo), desc="locating", unit="photo", disable=not progress or not todo) as bar:
        for (key, _), loc in zip(todo, localize_stream(locator, [p for _, p in todo], options, event)):
            results[key] = loc = _uncovered(loc)
            if progress_file is not None:
                outputs.append_jsonl(Path(progress_file), loc, inputs=key)
            bar.update(1)
    for b in bars.values():
        b.close()
    return [results[k] for k in keys]


def _uncovered(loc: Localization) -> Localization:
    """In a batch, a photo with no candidate because its visible disk holds no DB image of the index is
    an error record (the index does not cover the place), not "localized" with nothing."""
    p = loc.photo
    if loc.candidates or loc.error or p.nadir is None:
        return loc
    alt = f" ({p.altitude_km:.0f} km up)" if p.altitude_km is not None else ""
    return replace(loc, error=f"{p.mrf}: no DB image of the index lies in the area visible from the ISS at nadir "
                              f"{p.nadir[0]:.3f},{p.nadir[1]:.3f}{alt}: the index does not cover this place")


# --- the progress file (the one place that reads and keys it) ------------------------------------
def run_digest(locator: Locator, options: LocateOptions) -> str:
    """SHA-256 of what, besides the photo, produces a record: the index (its metadata: DB manifest
    digest, rotations, precision, model identity), the query model's identity, the search settings
    and ``options``."""
    run = {"index": locator.index.meta, "model": asdict(ModelIdentity.of(locator.model)),
           "search": {"max_off_nadir_deg": locator.max_off_nadir_deg, "require_area": locator.require_area,
                      "merge_years": locator.merge_years, "query_rotations": list(locator.query_rotations)},
           "options": asdict(options)}
    return _sha256(run)


def record_key(photo: Photo, run: str) -> str:
    """SHA-256 identifying one record: ``run`` (:func:`run_digest`), every field of the photo as
    given (path, MRF, nadir, time, altitude, ground truth, metadata) and the SHA-256 of its bytes."""
    return _sha256({"run": run, "photo": asdict(photo), "bytes": _file_sha256(photo.path)})


def _sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _file_sha256(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except (OSError, TypeError):  # no file (yet): the photo's own error row says so
        return None


def progress_key(photo: Photo) -> str:
    """Names a photo in a progress file: its path if known, else its MRF (for messages)."""
    return outputs.photo_key(photo)


def read_progress(progress_file: Path | None, options: LocateOptions) -> dict[str, Localization]:
    """The reusable records of a progress file by :func:`record_key` (later lines win): not failed,
    and verified or refined (``inliers`` set) when ``options`` ask for verification or refinement. Lines
    without a key (older files) are not reused."""
    if progress_file is None or not Path(progress_file).exists():
        return {}
    rows = {row["inputs"]: outputs.from_dict(row) for row in outputs.read_jsonl_rows(Path(progress_file))
            if row.get("inputs")}
    checked = options.verify or options.refine
    return {k: loc for k, loc in rows.items() if not loc.error and (not checked or loc.inliers is not None)}


def _tell_stale(progress_file: Path | None, todo: Sequence[Photo]) -> None:
    """Say on stderr how many photos of the progress file are redone because their inputs changed."""
    if progress_file is None or not Path(progress_file).exists() or not todo:
        return
    known = {progress_key(outputs.from_dict(row).photo) for row in outputs.read_jsonl_rows(Path(progress_file))}
    redone = sum(progress_key(p) in known for p in todo)
    if redone:
        tqdm.write(f"{progress_file}: {redone} photo(s) recomputed: their earlier records came from other "
                   "inputs (photo, position, options, index or model) or failed", file=sys.stderr)
