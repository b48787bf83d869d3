"""`facemark annotate`: folders as `predict` takes them, unreadable images skipped and listed, and
hand-corrected labels (.pts or XML) never replaced without --overwrite."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facemark.annotate import annotate
from facemark.api import Face
from facemark.cli import main
from facemark.images import load_image
from facemark.predict import SAMPLE_IMAGE


class Reader:
    """A landmarker that reads the image as Landmarker.detect does and returns one fixed face."""

    def detect(self, image, max_faces=None):
        load_image(image)  # FileNotFoundError / ImageError, as the real one
        points = np.random.default_rng(0).uniform(20, 200, (68, 2))
        return [Face((10.0, 10.0, 210.0, 210.0), 0.9, points, quality=0.5)]


@pytest.fixture
def folder(tmp_path) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    image = cv2.imread(str(SAMPLE_IMAGE))
    cv2.imwrite(str(folder / "a.jpg"), image)
    cv2.imwrite(str(folder / "sub" / "b.png"), image[:, ::-1])
    (folder / "notes.txt").write_text("not an image: ignored")
    return folder


def test_annotate_takes_folders_as_predict_does(folder, capsys):
    """`facemark annotate FOLDER` said "image file not found"."""
    assert main(["annotate", str(folder), "--pts"]) == 0
    assert (folder / "a.pts").is_file() and (folder / "sub" / "b.pts").is_file()
    assert "2 images" in capsys.readouterr().out


def test_an_unreadable_image_is_skipped_and_listed(folder, capsys):
    """One unreadable image aborted the run with nothing written."""
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = annotate([folder / "a.jpg", folder / "broken.jpg", folder / "sub" / "b.png"], Reader(), pts=True)
    assert sorted(Path(p).name for p in result["written"]) == ["a.pts", "b.pts"]
    assert [item["path"] for item in result["skipped"]] == [str(folder / "broken.jpg")]
    assert "not a readable image" in result["skipped"][0]["reason"]
    # the command line lists it and exits non-zero unless --skip-bad accepts that
    assert main(["annotate", str(folder / "a.jpg"), str(folder / "broken.jpg"), "--pts", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert f"skipped {folder / 'broken.jpg'}: " in err and "--skip-bad" in err
    assert main(["annotate", str(folder / "a.jpg"), str(folder / "broken.jpg"), "--pts", "--overwrite",
                 "--skip-bad"]) == 0


def test_two_images_with_one_stem_do_not_share_a_pts(folder):
    """`a.jpg` + `a.png` overwrote each other's `a.pts`: it goes to the image the dataset reader pairs with it."""
    cv2.imwrite(str(folder / "a.png"), cv2.imread(str(folder / "a.jpg")))
    result = annotate([folder / "a.png", folder / "a.jpg"], Reader(), pts=True)
    assert result["written"] == [str(folder / "a.pts")] and result["faces"] == [(str(folder / "a.jpg"), 0.5)]
    (skip,) = result["skipped"]
    assert skip["path"] == str(folder / "a.png") and "a.jpg beside it gets a.pts" in skip["reason"]


def test_an_existing_xml_file_is_kept_without_overwrite(folder, tmp_path):
    """`--out labels.xml` overwrote a hand-corrected file, while `--pts` kept existing labels."""
    labels = tmp_path / "labels.xml"
    labels.write_text("<dataset>corrected by hand</dataset>")
    with pytest.raises(ValueError, match=r"labels.xml: exists \(perhaps corrected by hand\); --overwrite replaces it"):
        annotate([folder], Reader(), out=labels)
    assert labels.read_text() == "<dataset>corrected by hand</dataset>"
    assert annotate([folder], Reader(), out=labels, overwrite=True)["written"] == [str(labels)]
    assert "<image file=" in labels.read_text()
