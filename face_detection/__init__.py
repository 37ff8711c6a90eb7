"""Face boxes for lip-sync inference, as Wav2Lip's `face_detect` (used by Diff2Lip) makes them.

S3FD detection (through face-alignment) in batches that halve on out-of-memory errors, the
first face per frame, nearest-frame fill for frames without one, pads, the released 5-frame
smoothing; or a fixed `--box` / the VoxCeleb2 crop. Boxes are `(y1, y2, x1, x2)`; frames RGB
uint8 `[H, W, 3]`.
"""

from .boxes import Box, check_box, fill_missing, pad_boxes, parse_box, parse_pads, smooth_boxes, voxceleb2_box
from .crop import PASTE_MODES, crop_face, paste_face
from .detector import S3FD_FILENAME, FaceDetector, is_oom_error, s3fd_weights_path
from .pipeline import boxes_from_detections, detect_faces, face_boxes, fixed_boxes

__all__ = [
    "Box",
    "boxes_from_detections",
    "detect_faces",
    "fixed_boxes",
    "FaceDetector",
    "PASTE_MODES",
    "S3FD_FILENAME",
    "check_box",
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
