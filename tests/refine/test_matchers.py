"""Every offered matcher loads from the installed wheels with the network blocked, and matches a real pair."""

from __future__ import annotations

import socket
import urllib.request

import numpy as np
import pytest
import torch

from earthloc.refine.matchers import MATCHERS, load_matcher

from .conftest import load_context


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download (torch.hub, urllib, raw sockets) fails the test."""

    def refuse(*a, **k):
        raise AssertionError(f"network access attempted: {a[:1]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("name", MATCHERS)
def test_matcher_offline_and_consistent(name, no_network, iss_mini, contexts_table):
    """Two overlapping 256-px crops of one real context (shifted by 40, 24 px): the matches agree with the
    shift for most pairs (median residual < 2 px)."""
    ctx, _ = load_context(iss_mini, contexts_table, "12_1164_2526")
    a = np.ascontiguousarray(ctx.image[600:856, 600:856])
    b = np.ascontiguousarray(ctx.image[624:880, 640:896])
    m = load_matcher(name, max_keypoints=512)
    got = m.match(a, b)
    assert len(got) >= 20, f"{name}: only {len(got)} matches"
    resid = np.linalg.norm(got.pts0 - (got.pts1 + [40, 24]), axis=1)
    assert np.median(resid) < 2.0, f"{name}: median residual {np.median(resid):.1f} px"


def test_matches_of_blank_images_are_empty():
    blank = np.full((128, 128, 3), 100, np.uint8)
    for name in ("sift", "orb"):
        assert len(load_matcher(name).match(blank, blank)) == 0
