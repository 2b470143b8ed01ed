"""Homography refinement on real Sentinel-2 contexts: known warps recovered, exact Mercator mapping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from earthloc.geo.footprint import Footprint, haversine_km
from earthloc.records import Candidate
from earthloc.refine.homography import (
    check_outline,
    footprint_of,
    initial_homography,
    photo_corners,
    refine_candidate,
    warp_to_photo,
)
from earthloc.refine.matchers import load_matcher

from .conftest import load_context, oracle_lonlat

# Contexts are looked up by candidate tile: "12_1164_2526" is forest and lakes at 61 N (z12),
# "10_0330_0918" spans 52-55 N at z10.


def _candidate(ctx, rotation: int) -> Candidate:
    b = ctx.block
    from earthloc.geo.tiles import TileBlock

    tile = TileBlock(b.zoom, b.row + 4, b.col + 4, 4)
    return Candidate(tile, 2018, rotation, 0.0, Footprint.from_bounds(*tile.bounds))


def _perturbation(w: int, h: int, angle: float, scale: float, shift: tuple[float, float], persp: float) -> np.ndarray:
    """Photo-frame similarity about the centre, a shift (px) and a small projective term."""
    c, s = np.cos(np.radians(angle)) * scale, np.sin(np.radians(angle)) * scale
    T = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]], float)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], float)
    B = np.array([[1, 0, w / 2 + shift[0]], [0, 1, h / 2 + shift[1]], [0, 0, 1]], float)
    P = np.array([[1, 0, 0], [0, 1, 0], [persp, 0, 1]], float)
    return B @ R @ T @ P


@pytest.mark.parametrize("matcher_name,rotation,iterations", [("sift", 90, 4), ("xfeat-lg", 270, 2)])
def test_known_homography_recovered(iss_mini, contexts_table, matcher_name, rotation, iterations):
    """A 384-px 'photo' cut from a real context through a known homography (rotated by the retrieval
    rotation, then turned 25 degrees, scaled, shifted and tilted): the refined corners land within 150 m
    (about 4 context pixels at 37 m/px) of the true ones, computed with pyproj from the CSV bounds."""
    ctx, row = load_context(iss_mini, contexts_table, "12_1164_2526")
    w = h = 384
    ch, cw = ctx.image.shape[:2]
    H_true = initial_homography(w, h, (cw, ch), rotation) @ _perturbation(w, h, 25, 0.8, (60, -40), 2e-4)
    photo = cv2.warpPerspective(ctx.image, H_true, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    ref = refine_candidate(photo, _candidate(ctx, rotation), ctx, load_matcher(matcher_name), iterations=iterations)
    assert ref.accepted, ref.reason
    true_px = (np.c_[photo_corners(w, h), np.ones(4)] @ H_true.T)
    true_px = true_px[:, :2] / true_px[:, 2:]
    lon, lat = oracle_lonlat(row, true_px[:, 0], true_px[:, 1])
    order = [3, 0, 1, 2]  # footprint corner order: photo BL, TL, TR, BR
    got = np.array(ref.footprint.corners)
    err_m = haversine_km(got[:, 0], got[:, 1], lat[order], lon[order]) * 1000
    assert err_m.max() < 150, err_m
    # and the first guess (the perturbation alone) was far off: refinement did the work
    guess = np.array(footprint_of(initial_homography(w, h, (cw, ch), rotation), w, h, ctx).corners)
    assert (haversine_km(guess[:, 0], guess[:, 1], lat[order], lon[order]) * 1000).max() > 2000


def test_pixel_to_latlon_exact_at_high_latitude(iss_mini, contexts_table):
    """At 52-55 N, z10, the footprint through any homography equals pyproj's Web-Mercator inverse to
    1e-7 degrees, while a latitude linear in pixel rows (EarthMatch) is off by more than 1.5 km mid-image."""
    ctx, row = load_context(iss_mini, contexts_table, "10_0330_0918")
    ch, cw = ctx.image.shape[:2]
    quad = np.array([[300.0, 250.0], [1300.0, 400.0], [1200.0, 1400.0], [200.0, 1100.0]])
    w = h = 512
    H = cv2.getPerspectiveTransform(photo_corners(w, h).astype(np.float32), quad.astype(np.float32)).astype(float)
    got = np.array(footprint_of(H, w, h, ctx).corners)
    lon, lat = oracle_lonlat(row, quad[:, 0], quad[:, 1])
    order = [3, 0, 1, 2]
    assert np.abs(got[:, 0] - lat[order]).max() < 1e-7
    assert np.abs(got[:, 1] - lon[order]).max() < 1e-7
    # the linear-in-latitude mapping is visibly wrong here
    lin_lat = row.north_lat + quad[:, 1] / ch * (row.south_lat - row.north_lat)
    assert haversine_km(lin_lat, lon, lat, lon).max() * 1000 > 1500


def test_outline_checks():
    """Degenerate outlines are named: bow-tie, mirrored, larger than the surrounding, off the surrounding."""
    ctx_wh = (1536, 1536)
    assert check_outline(np.array([[500, 500], [1000, 500], [1000, 1000], [500, 1000]], float), ctx_wh) is None
    assert check_outline(np.array([[500, 500], [1000, 1000], [1000, 500], [500, 1000]], float), ctx_wh) == "outline not convex"
    assert check_outline(np.array([[500, 500], [500, 1000], [1000, 1000], [1000, 500]], float), ctx_wh) == "outline mirrored"
    assert check_outline(np.array([[-900, -900], [2500, -900], [2500, 2500], [-900, 2500]], float), ctx_wh) \
        == "outline larger than the surrounding"
    assert check_outline(np.array([[2000, 2000], [2100, 2000], [2100, 2100], [2000, 2100]], float), ctx_wh) \
        == "outline centre outside the surrounding"


def test_rotation_convention_initial_guess(iss_mini, contexts_table):
    """R = 90: the photo's top-left corner sits on the candidate's top-right corner (the candidate turned
    counter-clockwise by 90 degrees), i.e. the photo turned clockwise by R is north-up."""
    ctx, _ = load_context(iss_mini, contexts_table, "12_1164_2526")
    H = initial_homography(512, 512, (1536, 1536), 90)
    tl = np.r_[0.0, 0.0, 1.0] @ H.T
    assert np.allclose(tl[:2] / tl[2], [1024, 512])
    turned = np.rot90(ctx.image[512:1024, 512:1024])  # numpy rot90 = counter-clockwise
    warped = warp_to_photo(ctx.image, H, 512, 512)
    assert np.abs(warped[2:-2, 2:-2].astype(int) - turned[2:-2, 2:-2].astype(int)).mean() < 0.5
