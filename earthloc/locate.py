"""Localize astronaut photos: encode at several rotations, search the DB images visible from the ISS,
return ranked candidate tiles with footprints.

Visible area: the ISS nadir (from the photo's metadata, or its UTC time through the TLE history) and
altitude (default: a typical ISS altitude) define a disk on the ground; only DB images whose centre
lies in it are searched (:func:`earthloc.geo.visibility.in_visible_disk`). The search inside the disk
is exact (see :meth:`earthloc.index.store.Index.search`).

This module holds the search stage (:class:`Locator`: resolve, visible mask, encode, rank); the
composition of stages over many photos, with refinement and a resumable progress file, is the
application layer :mod:`earthloc.pipeline`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from earthloc.errors import InputError
from earthloc.geo import visibility
from earthloc.geo.footprint import EARTH_RADIUS_KM, Footprint
from earthloc.geo.tiles import TileBlock
from earthloc.index.store import Index
from earthloc.models.encoders import Encoder, as_encoder
from earthloc.records import Candidate, Localization, Photo


def disk_mask(index: Index, nadir: tuple[float, float], altitude_km: float | None = None,
              max_off_nadir_deg: float | None = None) -> np.ndarray:
    """(N,) bool over index rows: DB images whose centre lies in the visible disk of ``nadir``.

    The answer is exactly :func:`earthloc.geo.visibility.in_visible_disk`'s, computed faster: only the
    rows of the latitude bands the disk can reach are looked at (a great-circle distance is at least
    the latitude difference); among them a dot product of unit vectors against cos(radius / R) settles
    every row except those within 1e-9 of the edge (about 2 cm), which go to ``in_visible_disk``.
    """
    alt = visibility.DEFAULT_ISS_ALTITUDE_KM if altitude_km is None else altitude_km
    radius_km = float(visibility.horizon_radius_km(alt, max_off_nadir_deg))
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
        sub[unsure] = visibility.in_visible_disk(nadir, altitude_km, index.centre_lat[a + unsure], index.centre_lon[a + unsure],
                                      max_off_nadir_deg)
    mask = np.zeros(len(index), dtype=bool)
    mask[a:b] = sub
    return mask


class Locator:
    """Ranks the DB images of ``index`` for photos, encoding them with ``encoder`` (its model must be
    the index's model; a bare model is encoded here on the CPU, 8 images x rotations per pass).

    ``max_off_nadir_deg``: shrink the visible disk to what a camera pointed at most that far from
    nadir sees (None: the whole disk to the horizon). ``require_area``: a photo with neither nadir
    nor time is an error (False: search the whole index). ``merge_years``: one candidate per place,
    with the best year, instead of one per DB image.
    """

    def __init__(self, index: Index, encoder: Encoder | torch.nn.Module, max_off_nadir_deg: float | None = None,
                 require_area: bool = True, merge_years: bool = True):
        self.encoder = as_encoder(encoder)
        index.identity.check(self.encoder.model, index.path or "index")
        self.index = index
        self.max_off_nadir_deg = max_off_nadir_deg
        self.require_area = require_area
        self.merge_years = merge_years
        # a 1x index is searched with the photo at 4 rotations; a 4x rotated index with the photo as is
        self.query_rotations = index.rotations.query_rotations
        self._n_years = max(1, int(index.manifest["year"].nunique()))
        self._tiles = index.manifest["tile"].tolist()
        self._years = index.manifest["year"].astype(int).tolist()
        self._paths = index.manifest["path"].tolist() if "path" in index.manifest else [None] * len(index)

    @property
    def model(self) -> torch.nn.Module:
        """The descriptor model (the index's)."""
        return self.encoder.model

    # --- per photo ---------------------------------------------------------------------------
    def resolve(self, photo: Photo) -> Photo:
        """The photo with its nadir and altitude filled in: nadir from metadata, else from its time via
        the ISS TLE history; altitude from metadata, the TLE, or the default ISS altitude."""
        nadir, alt = photo.nadir, photo.altitude_km
        if nadir is None and photo.time is not None and photo.extra.get("time_precision") == "day":
            if self.require_area:  # the ISS circles the Earth 16 times a day: a date says nothing of where
                raise InputError(photo.mrf, "only the date is known, the ISS position needs the exposure time "
                                            "(give the photo a time or a nadir)")
            return photo
        if nadir is None and photo.time is not None:
            state = visibility.iss_state(photo.time)
            nadir, alt = (float(state.lat), float(state.lon)), alt if alt is not None else float(state.altitude_km)
        if nadir is None:
            if self.require_area:
                raise InputError(photo.mrf, "no ISS nadir or time: give the photo a nadir or a time "
                                            "(or require_area=False to search the whole index)")
            return photo
        return replace(photo, nadir=nadir,
                       altitude_km=alt if alt is not None else float(visibility.DEFAULT_ISS_ALTITUDE_KM))

    def visible_mask(self, photo: Photo) -> np.ndarray | None:
        """(N,) bool over index rows: DB images whose centre is in the photo's visible disk (None: all)."""
        if photo.nadir is None:
            return None
        return disk_mask(self.index, photo.nadir, photo.altitude_km, self.max_off_nadir_deg)

    def encode(self, images: Sequence) -> np.ndarray:
        """Descriptors (B, R, D) of photos (paths or PIL images) at this locator's query rotations."""
        return self.encoder.encode(list(images), self.query_rotations)

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
