"""Contact sheets: frames in a grid under column labels, with optional row labels on the left.

The demo's sheets (video source | generated | audio source, `synthetic_lipsync.sheet`) and the web
app's before/after sheet are both drawn here, so a sheet always says what each column is.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import cv2
import numpy as np

from common.files import atomic_write_bytes

LABEL_BAND = 28  # px above the grid for the column labels
ROW_LABEL_WIDTH = 96  # px left of the grid for the row labels, when there are any
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(image: np.ndarray, text: str, x: int, y: int, width: int) -> None:
    """Black text from (x, y) (baseline), scaled down until it fits in `width` px."""
    scale = 0.55
    while scale > 0.3 and cv2.getTextSize(text, FONT, scale, 1)[0][0] > width - 8:
        scale -= 0.05
    cv2.putText(image, text, (x, y), FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)


def labelled_sheet(
    rows: Sequence[Sequence[np.ndarray]],
    column_labels: Sequence[str],
    row_labels: Optional[Sequence[str]] = None,
    cell_height: Optional[int] = None,
) -> np.ndarray:
    """RGB uint8 sheet: `rows[r][c]` (RGB uint8 `[H, W, 3]`, all the same size) at row r, column c,
    each column named on a white band above the grid and each row on a band to its left.

    `cell_height`: resize every frame to that height (keeping its aspect); None keeps the pixels
    exactly (a cell then equals its frame, which tests compare)."""
    if not rows or any(len(row) != len(column_labels) for row in rows):
        raise ValueError(f"every row needs one frame per column ({len(column_labels)})")
    h, w = rows[0][0].shape[:2]
    if cell_height is not None:
        w, h = max(1, round(w * cell_height / h)), cell_height
    left = ROW_LABEL_WIDTH if row_labels else 0
    sheet = np.full((LABEL_BAND + len(rows) * h, left + len(column_labels) * w, 3), 255, np.uint8)
    for c, label in enumerate(column_labels):
        _text(sheet, label, left + c * w + 6, LABEL_BAND - 9, w)
    for r, row in enumerate(rows):
        top = LABEL_BAND + r * h
        if row_labels:
            for k, line in enumerate(str(row_labels[r]).split("\n")):
                _text(sheet, line, 6, top + h // 2 + 20 * k, left)
        for c, frame in enumerate(row):
            if frame.shape[:2] != (h, w):
                frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
            sheet[top : top + h, left + c * w : left + (c + 1) * w] = frame
    return sheet


def write_png(path: str, image: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG, atomically (folders made)."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, data.tobytes())
