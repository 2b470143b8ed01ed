"""Localize astronaut photos: encode at several rotations, search the DB images visible from the ISS,
return ranked candidate tiles with footprints.

Visible area: the ISS nadir (from the photo's metadata, or its UTC time through the TLE history) and
altitude (default: a typical ISS altitude) define a disk on the ground; only DB images whose centre
lies in it are searched (:func:`earthloc.geo.visibility.in_visible_disk`). The search inside the disk
is exact (see :meth:`earthloc.index.store.Index.search`).

Batch runs (:func:`run_batch`) append one JSON line per photo to a progress file and skip the photos
already done on a rerun; a photo that cannot be read, or has no nadir/time, gets an error row and
the others go on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from earthloc import outputs
from earthloc.errors import InputError
from earthloc.geo.footprint import EARTH_RADIUS_KM, Footprint
from earthloc.geo.tiles import TileBlock
from earthloc.index.store import ROTATIONS, Index
from earthloc.records import Candidate, Localization, Photo

_ERRORS = (InputError, OSError, ValueError)  # per-photo failures a batch records and goes past


def disk_mask(index: Index, nadir: tuple[float, float], altitude_km: float | None = None,
              max_off_nadir_deg: float | None = None) -> np.ndarray:
    """(N,) bool over index rows: DB images whose centre lies in the visible disk of ``nadir``.

    The answer is exactly :func:`earthloc.geo.visibility.in_visible_disk`'s, computed faster: only the
    rows of the latitude bands the disk can reach are looked at (a great-circle distance is at least
    the latitude difference); among them a dot product of unit vectors against cos(radius / R) settles
    every row except those within 1e-9 of the edge (about 2 cm), which go to ``in_visible_disk``.
    """
    from earthloc.geo.visibility import DEFAULT_ISS_ALTITUDE_KM, horizon_radius_km, in_visible_disk

    alt = DEFAULT_ISS_ALTITUDE_KM if altitude_km is None else altitude_km
    radius_km = float(horizon_radius_km(alt, max_off_nadir_deg))
    angle = radius_km / EARTH_RADIUS_KM  # radians; haversine uses the same R
    a, b = index.lat_range(nadir[0] - np.degrees(angle) - 1e-6, nadir[0] + np.degrees(angle) + 1e-6)
    lat0, lon0 = np.radians(nadir[0]), np.radians(nadir[1])
    n = np.array([np.cos(lat0) * np.cos(lon0), np.cos(lat0) * np.sin(lon0), np.sin(lat0)])
    x, y, z = index.centre_xyz()[:, a:b]  # not BLAS: its threads spin after a call and slow the scan
    cos_d = x * n[0] + y * n[1] + z * n[2]
    edge = np.cos(min(angle, np.pi))
    sub = cos_d > edge + 1e-9
    unsure = np.flatnonzero(np.abs(cos_d - edge) <= 1e-9)
    if len(unsure):
        sub[unsure] = in_visible_disk(nadir, altitude_km, index.centre_lat[a + unsure], index.centre_lon[a + unsure],
                                      max_off_nadir_deg)
    mask = np.zeros(len(index), dtype=bool)
    mask[a:b] = sub
    return mask


class Locator:
    """Ranks the DB images of ``index`` for photos, using ``model`` (must be the index's model).

    ``max_off_nadir_deg``: shrink the visible disk to what a camera pointed at most that far from
    nadir sees (None: the whole disk to the horizon). ``require_area``: a photo with neither nadir
    nor time is an error (False: search the whole index). ``merge_years``: one candidate per place,
    with the best year, instead of one per DB image.
    """

    def __init__(self, index: Index, model, max_off_nadir_deg: float | None = None, require_area: bool = True,
                 merge_years: bool = True, batch_size: int = 8, device: str = "cpu", ray: str | None = None,
                 ray_cpus: int = 1):
        index.identity.check(model, index.path or "index")
        self.index, self.model = index, model
        self.max_off_nadir_deg = max_off_nadir_deg
        self.require_area = require_area
        self.merge_years = merge_years
        self.batch_size = batch_size
        self.device = device  # where photos are encoded: cpu, cuda[:N] or auto
        self.ray, self.ray_cpus = ray, ray_cpus  # locate_many encodes on Ray when set (earthloc.index.scaleout)
        # a 1x index is searched with the photo at 4 rotations; a 4x rotated index with the photo as is
        self.query_rotations = ROTATIONS if index.rotations == "query" else (0,)
        self._n_years = max(1, int(index.manifest["year"].nunique()))
        self._tiles = index.manifest["tile"].tolist()
        self._years = index.manifest["year"].astype(int).tolist()
        self._paths = index.manifest["path"].tolist() if "path" in index.manifest else [None] * len(index)

    # --- per photo ---------------------------------------------------------------------------
    def resolve(self, photo: Photo) -> Photo:
        """The photo with its nadir and altitude filled in: nadir from metadata, else from its time via
        the ISS TLE history; altitude from metadata, the TLE, or the default ISS altitude."""
        from earthloc.geo import visibility

        nadir, alt = photo.nadir, photo.altitude_km
        if nadir is None and photo.time is not None and photo.extra.get("time_precision") == "day":
            if self.require_area:  # the ISS circles the Earth 16 times a day: a date says nothing of where
                raise InputError(photo.mrf, "only the date is known, the ISS position needs the exposure time "
                                            "(give --time, --nadir or --metadata with nadir)")
            return photo
        if nadir is None and photo.time is not None:
            state = visibility.iss_state(photo.time)
            nadir, alt = (float(state.lat), float(state.lon)), alt or float(state.altitude_km)
        if nadir is None:
            if self.require_area:
                raise InputError(photo.mrf, "no ISS nadir or time: give --nadir, --time or --metadata "
                                            "(or --global to search the whole index)")
            return photo
        return replace(photo, nadir=nadir, altitude_km=alt or float(visibility.DEFAULT_ISS_ALTITUDE_KM))

    def visible_mask(self, photo: Photo) -> np.ndarray | None:
        """(N,) bool over index rows: DB images whose centre is in the photo's visible disk (None: all)."""
        if photo.nadir is None:
            return None
        return disk_mask(self.index, photo.nadir, photo.altitude_km, self.max_off_nadir_deg)

    def encode(self, images: Sequence) -> np.ndarray:
        """Descriptors (B, R, D) of photos (paths or PIL images) at this locator's query rotations."""
        from earthloc.models.encode import encode

        return encode(self.model, list(images), rotations=self.query_rotations, batch_size=self.batch_size,
                      progress=False, device=self.device)

    def rank(self, photo: Photo, descriptors: np.ndarray, top_k: int = 10) -> Localization:
        """Candidates of a resolved photo from its descriptors (R, D)."""
        mask = self.visible_mask(photo)
        k = top_k * self._n_years if self.merge_years else top_k
        hits = self.index.search(descriptors[None], k, mask=mask, query_rotations=self.query_rotations)[0]
        cands: list[Candidate] = []
        seen: set[str] = set()
        for h in hits:
            name = self._tiles[h.row]
            if self.merge_years and name in seen:
                continue
            seen.add(name)
            tile = TileBlock.from_name(name)
            path = self._paths[h.row]
            if path is not None and self.index.db_dir is not None:
                path = str(self.index.db_dir / path)
            cands.append(Candidate(tile=tile, year=self._years[h.row], rotation_deg=h.rotation_deg, score=h.score,
                                   footprint=Footprint(tile.corners), path=path))
            if len(cands) == top_k:
                break
        return Localization(photo=photo, candidates=tuple(cands))

    def _searchable(self, photo: Photo) -> Photo:
        """The resolved photo, or InputError when it has no image file or no search area."""
        if photo.path is None:
            raise InputError(photo.mrf, "no image file for this photo")
        return self.resolve(photo)

    def locate(self, photo: Photo, top_k: int = 10) -> Localization:
        """Ranked candidates (best first) for one photo. Bad photo or missing nadir/time -> InputError."""
        from earthloc.models.preprocess import load_image

        photo = self._searchable(photo)
        return self.rank(photo, self.encode([load_image(photo.path)])[0], top_k)

    # --- many photos -------------------------------------------------------------------------
    def locate_many(self, photos: Iterable[Photo], top_k: int = 10) -> Iterator[Localization]:
        """Localizations in input order; a failing photo yields a Localization with ``error`` set."""
        from earthloc.models.preprocess import load_image

        if self.ray is not None:
            yield from self._locate_many_on_ray(list(photos), top_k)
            return

        batch: list[tuple[Photo, object]] = []
        for photo in photos:
            try:
                photo = self._searchable(photo)
                batch.append((photo, load_image(photo.path)))
            except _ERRORS as err:
                yield from self._flush(batch, top_k)
                batch = []
                yield Localization(photo=photo, candidates=(), error=str(err))
                continue
            if len(batch) >= self.batch_size:
                yield from self._flush(batch, top_k)
                batch = []
        yield from self._flush(batch, top_k)

    def _locate_many_on_ray(self, photos: list[Photo], top_k: int) -> Iterator[Localization]:
        """As :meth:`locate_many`, photos encoded by Ray workers (read there by path), searched here."""
        from earthloc.index.scaleout import encode_photos_on_ray

        items: list[tuple[Photo, str | None]] = []
        for photo in photos:
            try:
                items.append((self._searchable(photo), None))
            except _ERRORS as err:
                items.append((photo, str(err)))
        good = [p.path for p, err in items if err is None]
        batches = [good[i:i + self.batch_size] for i in range(0, len(good), self.batch_size)]
        encoded = encode_photos_on_ray(self.model, batches, self.query_rotations, self.ray, self.ray_cpus, self.device)
        for photo, err in items:
            if err is None:
                out = next(encoded)
                err = out if isinstance(out, str) else None
            yield Localization(photo=photo, candidates=(), error=err) if err else self.rank(photo, out, top_k)
        encoded.close()

    def _flush(self, batch: list[tuple[Photo, object]], top_k: int) -> Iterator[Localization]:
        if not batch:
            return
        desc = self.encode([img for _, img in batch])
        for (photo, _), d in zip(batch, desc):
            yield self.rank(photo, d, top_k)


def run_batch(locator: Locator, photos: Sequence[Photo], progress_file: Path | None = None, top_k: int = 10,
              progress: bool = True) -> list[Localization]:
    """Localize ``photos``, resumably; returns one Localization per photo, in input order.

    With ``progress_file`` (JSON lines, append-only), photos already localized there are not redone;
    photos that failed before are retried; each new result is appended as soon as it exists.
    """
    from tqdm import tqdm

    done: dict[str, Localization] = {}
    if progress_file is not None and Path(progress_file).exists():
        for loc in outputs.read_jsonl(Path(progress_file)):
            done[outputs.photo_key(loc.photo)] = loc  # later lines win
    todo = [p for p in photos if outputs.photo_key(p) not in done or done[outputs.photo_key(p)].error]
    results = dict(done)
    bar = tqdm(total=len(todo), desc="locating", unit="photo", disable=not progress or not todo)
    for photo, loc in zip(todo, locator.locate_many(todo, top_k)):
        results[outputs.photo_key(photo)] = loc
        if progress_file is not None:
            outputs.append_jsonl(Path(progress_file), loc)
        bar.update(1)
    bar.close()
    return [results[outputs.photo_key(p)] for p in photos]
