"""corpus.data ``preprocess.regions`` / ``rotations``: text-line pieces cut from a page are the samples (the PP-OCR
recogniser and direction classifier manifests), each box in each rotation, in order, and no more."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corpus.data import image_samples
from corpus.fetch import CorpusError


def test_regions_are_the_samples_in_order_and_rotations_turn_each(tmp_path: Path) -> None:
    page = np.zeros((20, 40), np.uint8)
    page[:, :20] = 50  # left box dark, right box bright
    page[:, 20:] = 200
    page[:, 19] = 0  # the left box's last column marks which way it is turned
    Image.fromarray(page).save(tmp_path / "page.png")
    pre = {"size": [10, 20], "channels": "GRAY", "layout": "NCHW", "resize": "stretch",
           "regions": {"page.png": [[0, 0, 20, 10], [20, 0, 40, 10]]}, "rotations": [0, 180]}
    got = image_samples([tmp_path / "page.png"], pre, 8)
    assert len(got) == 4 and all(x.shape == (1, 1, 10, 20) for x in got)  # 2 boxes x 2 rotations, no more
    left, left_turned, right, right_turned = (x[0, 0] for x in got)
    assert left[:, 1:18].mean() == pytest.approx(50) and right.mean() == pytest.approx(200)
    assert (left[:, -1] < 20).all() and (left_turned[:, 0] < 20).all()  # turned 180 degrees: the mark moved
    assert len(image_samples([tmp_path / "page.png"], {**pre, "rotations": [0]}, 1)) == 1  # count caps it


def test_regions_naming_a_missing_file_are_refused(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(CorpusError, match="b.png"):
        image_samples([tmp_path / "a.png"], {"size": [4, 4], "regions": {"b.png": [[0, 0, 2, 2]]}}, 1)
