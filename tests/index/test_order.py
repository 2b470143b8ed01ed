"""Geo-cell row order and runs, on the 8,475 real 2021 DB tile centres of the official EarthLoc dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from earthloc.geo.footprint import haversine_km
from earthloc.index.order import geo_order, runs


@pytest.fixture(scope="module")
def centres(shared_data) -> tuple[np.ndarray, np.ndarray]:
    df = pd.read_csv(shared_data / "earthloc_meta" / "db_tiles_2021.csv")
    return df.center_lat.to_numpy(), df.center_lon.to_numpy()


def test_geo_order_sorts_by_latitude_band_then_longitude(centres):
    lat, lon = centres
    order = geo_order(lat, lon)
    assert sorted(order.tolist()) == list(range(len(lat)))  # a permutation
    band, lo = np.floor(lat[order]), lon[order]
    assert (np.diff(band) >= 0).all()
    same = np.diff(band) == 0
    assert (np.diff(lo)[same] >= 0).all()


def test_geo_order_makes_disks_few_runs(centres):
    lat, lon = centres
    order = geo_order(lat, lon)
    mask = haversine_km(0.0, 20.0, lat[order], lon[order]) <= 2300.0
    spans = runs(mask)
    assert sum(b - a for a, b in spans) == mask.sum()
    assert len(spans) <= 50  # about one run per 1-degree band crossing the disk (~41 bands)


def test_runs_and_gap_joining():
    m = np.array([True, False, True, True, False, False, True])
    assert runs(m) == [(0, 1), (2, 4), (6, 7)]
    assert runs(m, max_gap=1) == [(0, 4), (6, 7)]
    assert runs(m, max_gap=2) == [(0, 7)]
    assert runs(np.zeros(3, bool)) == []
