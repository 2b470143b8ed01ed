// earthloc's map renderer (Leaflet 1.9): draws the evidence of a localization, built by earthloc/webmap.py.
// Used by the web app's page and inlined into the single-file HTML maps (locate --map), so both look alike.
(function (global) {
  "use strict";
  const C = {best: "#ff1744", other: "#ffab00", photo: "#d500f9", nadir: "#2979ff", truth: "#00e676"};
  const BLANK = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7";
  const photoOverlays = new Set();
  let photoOpacityValue = 0.85;

  // The Blue Marble world map: tiles from the server (url template) or embedded data URIs (tiles dict).
  function offlineWorld(world) {
    const opts = {maxNativeZoom: world.maxNativeZoom, maxZoom: 19, noWrap: false,
                  attribution: "Blue Marble: NASA Earth Observatory"};
    if (world.url) return L.tileLayer(world.url, opts);
    const Embedded = L.TileLayer.extend({
      getTileUrl: c => world.tiles[`${c.z}/${c.x}/${c.y}`] || BLANK,
    });
    return new Embedded("", opts);
  }

  function esc(s) {
    return String(s).replace(/[&<>"']/g, ch => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[ch]);
  }

  // One photo's evidence as a feature group: visible disk and nadir, candidate DB images on their
  // footprints (best on top), the photo warped onto its refined footprint, NASA's centre/footprint.
  // opts.disk: draw the visible disk (default true; a map of many photos leaves it out).
  function drawEvidence(ev, opts = {}) {
    const g = L.featureGroup();
    const name = esc(ev.mrf);
    if (ev.disk) {
      if (opts.disk !== false) {
        L.polygon(ev.disk, {color: C.nadir, weight: 1.5, dashArray: "6 6", fillOpacity: 0.04, interactive: false})
          .addTo(g);
      }
      L.circleMarker(ev.nadir, {radius: 6, color: "#fff", weight: 2, fillColor: C.nadir, fillOpacity: 1})
        .bindTooltip(`${name}: ISS nadir ${ev.nadir[0].toFixed(1)}, ${ev.nadir[1].toFixed(1)}; ` +
                     `visible disk ${Math.round(ev.radius_km)} km`).addTo(g);
    }
    for (const c of ev.candidates.slice().reverse()) {
      const best = c.rank === 1;
      if (c.image) L.imageOverlay(c.image, c.bounds, {className: "earthloc-candidate", interactive: false}).addTo(g);
      L.polygon(c.ring, {color: best ? C.best : C.other, weight: best ? 3 : 1.5, dashArray: best ? null : "5 4",
                         fill: !c.image, fillOpacity: 0.1, className: `earthloc-rank-${c.rank}`})
        .bindTooltip(`${name} #${c.rank} ${esc(c.tile)} (${c.year}) score ${c.score.toFixed(3)}, ` +
                     `rotation ${c.rotation_deg}&deg;`).addTo(g);
    }
    if (ev.photo) {
      if (ev.photo.image) {
        const o = L.imageOverlay(ev.photo.image, ev.photo.bounds,
                                 {opacity: photoOpacityValue, className: "earthloc-photo", interactive: false});
        photoOverlays.add(o);
        o.addTo(g);
      }
      const conf = ev.photo.confidence == null ? "" : `, confidence ${ev.photo.confidence.toFixed(2)}`;
      const inl = ev.photo.inliers == null ? "" : `, ${ev.photo.inliers} inliers`;
      L.polygon(ev.photo.ring, {color: C.photo, weight: 3, fill: false, className: "earthloc-refined"})
        .bindTooltip(`${name}: the photo on its verified footprint${inl}${conf}`).addTo(g);
    }
    if (ev.true_footprint) {
      L.polygon(ev.true_footprint, {color: C.truth, weight: 2, fill: false, dashArray: "2 4"})
        .bindTooltip(`${name}: NASA footprint`).addTo(g);
    }
    if (ev.true_centre) {
      L.circleMarker(ev.true_centre, {radius: 5, color: "#000", weight: 1, fillColor: C.truth, fillOpacity: 1})
        .bindTooltip(`${name}: NASA centre point`).addTo(g);
    }
    return g;
  }

  function legend() {
    const ctl = L.control({position: "bottomright"});
    ctl.onAdd = () => {
      const d = L.DomUtil.create("div", "earthloc-legend");
      d.style.cssText = "background:rgba(255,255,255,.9);padding:6px 8px;font:12px system-ui,sans-serif;" +
                        "line-height:18px;border-radius:4px;box-shadow:0 1px 4px rgba(0,0,0,.3)";
      const sw = (css, text) => `<div><span style="display:inline-block;width:18px;height:10px;margin-right:6px;` +
                                `vertical-align:middle;${css}"></span>${text}</div>`;
      d.innerHTML = "<b>Legend</b>" +
        sw(`border:3px solid ${C.best}`, "best candidate (its DB image)") +
        sw(`border:2px dashed ${C.other}`, "other candidates (their DB images)") +
        sw(`border:3px solid ${C.photo}`, "the photo on its verified footprint") +
        sw(`border:2px dotted ${C.truth}`, "NASA footprint / centre point") +
        sw(`border-radius:9px;background:${C.nadir};border:2px solid #fff;width:10px`, "ISS nadir") +
        sw(`border:1.5px dashed ${C.nadir}`, "visible disk (area searched)") +
        `<div style="color:#555">Blue Marble: NASA. Sentinel-2 cloudless: EOX.</div>`;
      return d;
    };
    return ctl;
  }

  // A slider for the opacity of the warped photo(s).
  function photoOpacity() {
    const ctl = L.control({position: "topright"});
    ctl.onAdd = () => {
      const d = L.DomUtil.create("div", "earthloc-opacity");
      d.style.cssText = "background:rgba(255,255,255,.9);padding:4px 8px;font:12px system-ui,sans-serif;border-radius:4px";
      d.innerHTML = `<label>photo opacity <input type="range" min="0" max="100" value="${photoOpacityValue * 100}"` +
                    ` style="vertical-align:middle;width:90px"></label>`;
      L.DomEvent.disableClickPropagation(d);
      d.querySelector("input").addEventListener("input", ev => {
        photoOpacityValue = ev.target.value / 100;
        for (const o of photoOverlays) o.setOpacity(photoOpacityValue);
      });
      return d;
    };
    return ctl;
  }

  // Fit the map to what there is to judge: candidates, the photo, NASA's footprint (the nadir and the
  // disk, thousands of km away, only when there is nothing else).
  function fit(map, groups) {
    let b = null;
    const add = lb => { b = b ? b.extend(lb) : L.latLngBounds(lb.getSouthWest(), lb.getNorthEast()); };
    for (const g of groups) {
      g.eachLayer(l => { if (l instanceof L.Polygon && l.options.dashArray !== "6 6") add(l.getBounds()); });
    }
    if (!b) for (const g of groups) if (g.getLayers().length) add(g.getBounds());
    if (b) map.fitBounds(b.pad(0.25), {maxZoom: 13}); else map.setView([20, 0], 2);
  }

  function clearPhotos(group) {
    group.eachLayer(l => photoOverlays.delete(l));
  }

  global.earthloc = {offlineWorld, drawEvidence, legend, photoOpacity, fit, clearPhotos, colors: C};
})(window);
