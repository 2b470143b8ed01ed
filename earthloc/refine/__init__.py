"""Footprint refinement (EarthMatch-style): match the photo to each candidate's 12x12-tile surrounding,
iterate a RANSAC homography, map the photo corners to lon/lat exactly, re-rank by inliers, and turn
inliers into a calibrated confidence.

Main entry points: :func:`earthloc.refine.rerank.refine_localization` (a Localization in, the same
candidates re-ranked with ``refined_footprint``/``inliers``/``confidence`` out),
:func:`earthloc.refine.homography.refine_candidate` (one candidate), the context providers in
:mod:`earthloc.refine.context` and the matchers in :mod:`earthloc.refine.matchers`.
"""
