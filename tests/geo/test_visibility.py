"""Visibility from the ISS: horizon geometry, SGP4 states from the real TLE history, and what the real
photo metadata (nadir to 0.1 deg, date only) allows us to check."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from earthloc.errors import InputError
from earthloc.geo.footprint import EARTH_RADIUS_KM, haversine_km
from earthloc.geo.visibility import (
    DEFAULT_ISS_ALTITUDE_KM,
    closest_track_point,
    ground_track,
    horizon_radius_km,
    in_visible_disk,
    iss_state,
    load_tles,
    nearest_tle,
)
from earthloc.photos import load_photos

R = EARTH_RADIUS_KM


def _ground_point(d_km: float) -> np.ndarray:
    lam = d_km / R
    return np.array([R * math.sin(lam), 0.0, R * math.cos(lam)])


@pytest.mark.parametrize("h", [330.0, 415.0, 440.0])
def test_horizon_is_tangent_and_off_nadir_angle_holds(h):
    sat = np.array([0.0, 0.0, R + h])
    p = _ground_point(horizon_radius_km(h))
    assert abs(np.dot(sat - p, p)) / (R * R) < 1e-9  # line of sight tangent to the sphere at the horizon
    for eta in (10.0, 30.0, 55.0):
        p = _ground_point(horizon_radius_km(h, eta))
        v = p - sat
        angle = math.degrees(math.acos(np.dot(v, -sat) / np.linalg.norm(v) / np.linalg.norm(sat)))
        assert angle == pytest.approx(eta, abs=1e-9)
    assert horizon_radius_km(h, 0.0) == 0.0
    assert horizon_radius_km(h, 89.0) == horizon_radius_km(h)  # beyond the horizon angle: capped
    assert 2150 < horizon_radius_km(DEFAULT_ISS_ALTITUDE_KM) < 2350


def test_in_visible_disk_edges():
    r = horizon_radius_km(400.0)
    lats = np.array([0.0, 0.0, 0.0])
    lons = np.degrees(np.array([r - 1.0, r + 1.0, 0.0]) / R)
    assert in_visible_disk((0.0, 0.0), 400.0, lats, lons).tolist() == [True, False, True]
    assert in_visible_disk(None, 400.0, lats, lons).tolist() == [True, True, True]  # unknown nadir: all may be seen
    with pytest.raises(InputError):
        horizon_radius_km(-5.0)
    with pytest.raises(InputError):
        horizon_radius_km(400.0, 120.0)


def test_tle_file_parsed_sorted_and_nearest(shared_data):
    from sgp4.api import Satrec

    tles = load_tles(shared_data / "orbits" / "iss_tle.txt")
    assert len(tles.epochs) == 49359 and np.all(np.diff(tles.epochs) >= 0)
    raw = (shared_data / "orbits" / "iss_tle.txt").read_text().splitlines()
    sat_all = [Satrec.twoline2rv(raw[i], raw[i + 1]) for i in range(0, len(raw), 2)]
    jd_all = np.array([s.jdsatepoch + s.jdsatepochF for s in sat_all])
    assert np.any(np.diff(jd_all) < 0)  # the file is not chronological...
    unix = (np.sort(jd_all) - 2440587.5) * 86400
    assert np.allclose(unix, tles.epochs, atol=1e-3)  # ...and we hold every epoch, sorted
    when = datetime(2019, 3, 14, 15, 9, 26, tzinfo=UTC)
    l1, l2, epoch = nearest_tle(when)
    jd_when = 2440587.5 + when.timestamp() / 86400
    best = np.abs(jd_all - jd_when).min()
    s = Satrec.twoline2rv(l1, l2)
    assert abs(s.jdsatepoch + s.jdsatepochF - jd_when) == pytest.approx(best, abs=1e-9)
    assert abs((epoch - when).total_seconds()) / 86400 == pytest.approx(best, abs=1e-6)


def test_iss_state_matches_skyfields_full_earth_model():
    """Our fast path (SGP4 TEME -> GMST rotation -> pyproj WGS84) against skyfield's own conversion
    (TEME -> GCRS -> ITRS with precession-nutation, its WGS84): same sub-point to < 0.01 deg, 50 m."""
    from skyfield.api import EarthSatellite, load, wgs84

    ts = load.timescale(builtin=True)
    for when in (datetime(2004, 2, 1, 3, 0), datetime(2016, 5, 5, 18, 30, 12), datetime(2023, 11, 30, 23, 59)):
        st = iss_state(when)
        l1, l2, _ = nearest_tle(when)
        pos = EarthSatellite(l1, l2, ts=ts).at(ts.from_datetime(when.replace(tzinfo=UTC)))
        lat, lon = wgs84.latlon_of(pos)
        assert st.lat == pytest.approx(lat.degrees, abs=0.01)
        assert (st.lon - lon.degrees + 180) % 360 - 180 == pytest.approx(0, abs=0.01)
        assert st.altitude_km == pytest.approx(wgs84.height_of(pos).km, abs=0.05)
        assert 320 < st.altitude_km < 450
    with pytest.raises(InputError, match="no ISS TLE within"):
        iss_state(datetime(1990, 1, 1))


def test_bad_tle_file(tmp_path):
    p = tmp_path / "tle.txt"
    p.write_text("1 25544U 98067A   98324.28472222 -.00003657  11563-4  00000+0 0  9996\n")
    with pytest.raises(InputError, match="without its line 2"):
        load_tles(p)
    p.write_text("hello\n")
    with pytest.raises(InputError, match="no two-line element sets"):
        load_tles(p)


@pytest.fixture(scope="module")
def track_fit(shared_data) -> pd.DataFrame:
    """For the photos of 60 random real dates: distance from their nadir to that UTC day's ground track
    (and to the track 3 days later, a control), plus the time and height where the track passes."""
    q = pd.read_csv(shared_data / "earthloc_meta" / "queries.csv")
    dates = pd.Series(q.date.unique()).sample(60, random_state=0)
    out = []
    for d in dates:
        g = q[q.date == d]
        day = datetime.strptime(str(d), "%Y%m%d")
        tr = ground_track(day, day + timedelta(days=1), 10.0)
        km, sec, alt = closest_track_point(tr, g.nadir_lat.to_numpy(), g.nadir_lon.to_numpy())
        ctl = ground_track(day + timedelta(days=3), day + timedelta(days=4), 10.0)
        km_ctl, _, _ = closest_track_point(ctl, g.nadir_lat.to_numpy(), g.nadir_lon.to_numpy())
        out.append(pd.DataFrame({"mrf": g.mrf, "date": d, "km": km, "km_control": km_ctl, "sec": sec, "alt": alt,
                                 "abs_lat": g.nadir_lat.abs(), "track_max_lat": np.abs(tr.lat).max()}))
    return pd.concat(out, ignore_index=True)


def test_real_nadirs_lie_on_their_days_ground_track(track_fit):
    """Photos carry only the date, so the nadir cannot be checked against a time. What is checkable: the
    nadir must lie on that UTC day's ground track (the ISS covers a 51.6-deg band, 16 orbits a day, so a
    point of the band is typically ~230 km from a given day's track). Measured on all 17,752 photos:
    median 2.3 km, 99.98% within 30 km (0.1-deg rounding is up to 8 km; TLE error a few km)."""
    assert len(track_fit) > 300
    assert np.median(track_fit.km) < 5.0
    assert np.mean(track_fit.km < 30.0) >= 0.995
    assert np.median(track_fit.km_control) > 100.0  # a wrong day does not fit: the test can fail
    assert np.mean(track_fit.km_control < 30.0) < 0.3
    assert np.all(track_fit.abs_lat <= track_fit.track_max_lat + 0.05 + 1e-9)  # inclination band
    assert track_fit.alt.between(320, 445).all()


def test_consecutive_frames_recover_increasing_times(track_fit):
    """The time at which the track passes the nadir grows with the frame number within a roll."""
    t = track_fit.assign(roll=track_fit.mrf.str.rsplit("-", n=1).str[0],
                         frame=track_fit.mrf.str.rsplit("-", n=1).str[1].astype(int))
    t = t.sort_values(["roll", "date", "frame"])
    g = t.groupby(["roll", "date"])
    close = (g.frame.diff() > 0) & (g.frame.diff() <= 5)
    dt = g.sec.diff()[close]
    assert len(dt) > 100
    assert np.mean(dt >= -2.0) >= 0.98  # 2 s = the 0.1-deg nadir rounding at 7.7 km/s


def test_share_of_footprint_centres_in_visible_disk(shared_data):
    """Share of real photos whose footprint centre lies in the visible disk from their nadir at the
    default ISS height: 99.94% (10 of 17,752 are outside: footprints thousands of km from the nadir,
    i.e. wrong labels). Restricting to 45 deg off nadir must lose many (so the test can fail)."""
    photos = load_photos(shared_data / "earthloc_meta" / "queries.csv")
    c = np.array([p.centre for p in photos])
    share = np.mean([in_visible_disk(p.nadir, None, [p.centre[0]], [p.centre[1]])[0] for p in photos[:2000]])
    assert share >= 0.999
    n = np.array([p.nadir for p in photos])
    d = haversine_km(n[:, 0], n[:, 1], c[:, 0], c[:, 1])
    full = np.mean(d <= horizon_radius_km(DEFAULT_ISS_ALTITUDE_KM))
    assert 0.999 <= full < 1.0
    assert np.mean(d <= horizon_radius_km(DEFAULT_ISS_ALTITUDE_KM, 45.0)) < 0.8


def test_time_from_nadir_round_trips_through_iss_state(shared_data):
    """The time recovered from (date, nadir) puts the ISS back over that nadir (real photos)."""
    from earthloc.geo.visibility import time_from_nadir

    q = pd.read_csv(shared_data / "earthloc_meta" / "queries.csv").sample(5, random_state=3)
    for d, lat, lon in zip(q.date, q.nadir_lat, q.nadir_lon):
        day = datetime.strptime(str(d), "%Y%m%d")
        fix = time_from_nadir((lat, lon), day)
        assert fix.time.date() == day.date() and fix.distance_km < 30
        st = iss_state(fix.time)
        assert haversine_km(lat, lon, st.lat, st.lon) < fix.distance_km + 2.0
        assert st.altitude_km == pytest.approx(fix.altitude_km, abs=0.5)
