"""``open_source``: each text spec opens the source it names, on the real shared data; bad specs name
themselves and say what is expected."""

from __future__ import annotations

import pytest

from earthloc.errors import InputError
from earthloc.sources.mosaic import MosaicSource
from earthloc.sources.raster import RasterSource
from earthloc.sources.spec import open_source
from earthloc.sources.wmts import WmtsSource


def test_iss_mini_with_and_without_a_folder(shared_data):
    default, given = open_source("iss-mini"), open_source(f"iss-mini:{shared_data / 'iss_mini'}")
    assert isinstance(default, MosaicSource) and isinstance(given, MosaicSource)
    assert len(default.mosaics) == len(given.mosaics) == 190  # one per context (data README)
    assert default.years == (2018,)


def test_raster_years_map_to_their_files(shared_data):
    files = sorted((shared_data / "multiyear" / "landsat_pucallpa").glob("*.tif"))[:2]
    src = open_source("raster:" + ",".join(f"{f.stem}={f}" for f in files))
    assert isinstance(src, RasterSource)
    assert src.years == tuple(sorted(int(f.stem) for f in files))


def test_a_url_is_a_wmts_template(tmp_path):
    src = open_source("http://127.0.0.1:9/{z}/{x}/{y}.png", years=[2020], cache_dir=tmp_path)
    try:
        assert isinstance(src, WmtsSource) and src.years == (2020,)
        assert src.url(3, 1, 2, 2020) == "http://127.0.0.1:9/3/1/2.png"
    finally:
        src.close()


@pytest.mark.parametrize(("spec", "says"), [
    ("raster:2020", "YEAR=PATH"),
    ("raster:2020=/no/such.tif", "raster not found"),
    ("nonsense", "use eox, wmts:URL"),
])
def test_bad_specs_name_themselves(spec, says):
    with pytest.raises(InputError, match=says):
        open_source(spec)


def test_iss_mini_in_a_folder_without_it(tmp_path):
    with pytest.raises(InputError, match="not an iss_mini folder"):
        open_source(f"iss-mini:{tmp_path}")
