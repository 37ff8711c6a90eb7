"""Contact sheets (evaluation/sheets.py): frames placed exactly in their cells, column and row
labels on white bands that fit their cells, frames of another size resized, and the PNG written
atomically and read back unchanged."""

import os

import cv2
import numpy as np
import pytest

from evaluation import sheets
from evaluation.sheets import LABEL_BAND, ROW_LABEL_WIDTH, labelled_sheet, write_png


def frames(n, h=40, w=60, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def dark(region):
    return region.min(axis=-1) < 128


def test_each_frame_is_its_cell_pixel_for_pixel_under_labelled_columns():
    cells = frames(6)
    rows = [cells[0:3], cells[3:6]]
    image = labelled_sheet(rows, ["video", "generated", "audio"])
    assert image.shape == (LABEL_BAND + 2 * 40, 3 * 60, 3) and image.dtype == np.uint8
    for r in range(2):
        for c in range(3):
            cell = image[LABEL_BAND + r * 40 : LABEL_BAND + (r + 1) * 40, c * 60 : (c + 1) * 60]
            np.testing.assert_array_equal(cell, rows[r][c])
    band = image[:LABEL_BAND]
    # White except for the black text of each label, one label per column.
    assert (band == 255).all(axis=-1).mean() > 0.8
    assert all(dark(band[:, c * 60 : (c + 1) * 60]).any() for c in range(3))
    assert (band[:, :, 0] == band[:, :, 2]).all()  # grey text on white: no colour in the band


def test_an_empty_label_leaves_its_band_white():
    image = labelled_sheet([frames(2)], ["", "after"])
    assert (image[:LABEL_BAND, :60] == 255).all() and dark(image[:LABEL_BAND, 60:]).any()


def test_a_long_label_is_scaled_down_to_stay_in_its_column():
    image = labelled_sheet([frames(2, w=80)], ["video source", ""])
    # At the starting scale "video source" is 97 px wide and would reach x = 103, into column 2.
    assert cv2.getTextSize("video source", sheets.FONT, 0.55, 1)[0][0] == 97
    cols = np.flatnonzero(dark(image[:LABEL_BAND]).any(axis=0))
    assert cols.min() >= 6 and cols.max() < 80


def test_row_labels_take_a_left_band_and_break_at_newlines():
    cells = frames(2, h=80)
    image = labelled_sheet([cells[:1], cells[1:]], ["frame"], row_labels=["k = 0\n0.00 s", "k = 1"])
    assert image.shape == (LABEL_BAND + 2 * 80, ROW_LABEL_WIDTH + 60, 3)
    np.testing.assert_array_equal(image[LABEL_BAND : LABEL_BAND + 80, ROW_LABEL_WIDTH:], cells[0])
    left = image[LABEL_BAND:, :ROW_LABEL_WIDTH]
    # Line k of a row's label sits on the baseline h / 2 + 20 k below the row's top.
    first_line, second_line = dark(left[25:42]).any(), dark(left[45:62]).any()
    assert first_line and second_line
    assert dark(left[80 + 25 : 80 + 42]).any() and not dark(left[80 + 45 : 80 + 62]).any()
    assert not dark(image[:LABEL_BAND, :ROW_LABEL_WIDTH]).any()  # the corner stays white


def test_frames_of_another_size_are_resized_to_the_first_frames_cell():
    small, big = frames(1, 40, 60)[0], frames(1, 80, 120, seed=1)[0]
    image = labelled_sheet([[small, big]], ["a", "b"])
    np.testing.assert_array_equal(image[LABEL_BAND:, 60:], cv2.resize(big, (60, 40), interpolation=cv2.INTER_AREA))


def test_labelled_sheet_resizes_cells_and_refuses_ragged_rows():
    frame = np.full((90, 160, 3), 40, np.uint8)
    image = sheets.labelled_sheet([[frame, frame]], ["before", "after"], cell_height=45)
    assert image.shape == (sheets.LABEL_BAND + 45, 2 * 80, 3)  # no row labels: no left band
    assert (image[sheets.LABEL_BAND:] == 40).all()
    with pytest.raises(ValueError, match="one frame per column"):
        sheets.labelled_sheet([[frame]], ["before", "after"])
    with pytest.raises(ValueError, match=r"every row needs one frame per column \(2\)"):
        sheets.labelled_sheet([], ["before", "after"])


def test_png_is_written_atomically_and_reads_back_as_the_same_rgb_image(tmp_path):
    image = labelled_sheet([frames(2)], ["before", "after"], row_labels=["clip"])
    path = tmp_path / "deep" / "er" / "sheet.png"
    write_png(str(path), image)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, image)  # lossless, and red stays red
    assert os.listdir(path.parent) == ["sheet.png"]
    write_png(str(path), image[::2, ::2].copy())  # overwriting replaces the file whole
    assert cv2.imread(str(path)).shape == (image.shape[0] // 2 + image.shape[0] % 2, image.shape[1] // 2 + image.shape[1] % 2, 3)
    assert os.listdir(path.parent) == ["sheet.png"]
