"""Self-contained Leaflet maps: folium pages with Leaflet inlined, so the HTML files open offline.

folium links Leaflet, jQuery, Bootstrap and Font Awesome from CDNs; our maps use only Leaflet itself
(polygons, circle markers, tooltips, the layer control), so the page is rendered with Leaflet alone and
the copy that ``earthloc serve`` also serves (``service/static/leaflet``, Leaflet 1.9.4, BSD-2-Clause)
is inlined, its images as data URIs. Only the OpenStreetMap base layer still needs the internet; the
footprints and points show without it.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

from earthloc.atomic import atomic_path

LEAFLET = Path(__file__).with_name("service") / "static" / "leaflet"
_JS, _CSS = "EARTHLOC_LEAFLET_JS", "EARTHLOC_LEAFLET_CSS"


def _inline_css() -> str:
    def data_uri(m: re.Match) -> str:
        png = base64.b64encode((LEAFLET / m.group(1)).read_bytes()).decode()
        return f"url(data:image/png;base64,{png})"

    return re.sub(r"url\((images/[\w-]+\.png)\)", data_uri, (LEAFLET / "leaflet.css").read_text(encoding="utf-8"))


def render_offline(fmap) -> str:
    """HTML of a folium map with Leaflet's JS and CSS inlined and no other library linked."""
    fmap.default_js = [("leaflet", _JS)]
    fmap.default_css = [("leaflet_css", _CSS)]
    html = fmap.get_root().render()
    js_tag, css_tag = f'<script src="{_JS}"></script>', f'<link rel="stylesheet" href="{_CSS}"/>'
    if js_tag not in html or css_tag not in html:  # a folium that renders its head differently
        raise RuntimeError("folium page layout not recognised: cannot inline Leaflet")
    js = (LEAFLET / "leaflet.js").read_text(encoding="utf-8")
    return html.replace(js_tag, f"<script>{js}</script>").replace(css_tag, f"<style>{_inline_css()}</style>")


def save_offline(fmap, path: Path) -> None:
    """Write :func:`render_offline` of ``fmap`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(render_offline(fmap), encoding="utf-8")
