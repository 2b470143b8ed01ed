"""Rotation layouts of an index: which rotations go to the DB and which to the photo."""

from __future__ import annotations

import pytest

from earthloc.errors import InputError
from earthloc.index.formats import ROTATIONS, RotationMode


def test_rotation_modes_split_the_four_rotations_between_db_and_photo():
    assert (RotationMode.QUERY.db_rotations, RotationMode.QUERY.query_rotations) == ((0,), ROTATIONS)
    assert (RotationMode.DB.db_rotations, RotationMode.DB.query_rotations) == (ROTATIONS, (0,))
    assert RotationMode.parse("db") is RotationMode.DB and RotationMode.parse(RotationMode.QUERY) is RotationMode.QUERY
    assert RotationMode.DB == "db" and str(RotationMode.QUERY) == "query"  # as written in index.json


def test_unknown_rotation_mode_names_the_parameter():
    with pytest.raises(InputError, match=r"^rotations: must be 'query' or 'db', got 'both'$"):
        RotationMode.parse("both")
