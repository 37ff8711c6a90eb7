"""The face flags (face_detection/options.py) through the parser every command builds from them:
defaults, the --box / --pads / --face_select checks, the ranges and choices, and the two rules
(--box with --is_voxceleb2 True; --pads with a fixed box)."""

import argparse

import pytest

from common.errors import Diff2LipError
from common.flags import create_argparser
from face_detection import FACE_DETECTORS, NO_FACE_MODES, PASTE_MODES, parse_box, parse_face_select, parse_pads
from face_detection.options import FACE_OPTIONS, MIN_BOX_SIDE
from face_detection.tracking import FaceSelect


def parse(*argv):
    return create_argparser(FACE_OPTIONS).parse_args(list(argv))


def error(*argv) -> str:
    with pytest.raises(Diff2LipError) as err:
        parse(*argv)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_defaults_are_the_released_voxceleb2_crop_and_the_tracking_defaults():
    args = parse()
    assert vars(args) == {
        "face_det_batch_size": 64, "face_det_scale": 0.0, "face_detector": "s3fd", "face_select": "largest",
        "no_face": "passthrough", "max_fill_gap": 3, "cut_threshold": 0.5, "pads": "0,0,0,0",
        "is_voxceleb2": True, "box": "", "paste": "full", "color_match": False,
        "detect_every": 5, "detect_min_face": 0.0,
    }
    assert FACE_OPTIONS.defaults() == vars(args)


def test_both_flag_forms_and_boolean_spellings_parse_to_typed_values():
    args = parse("--is_voxceleb2=false", "--box", "10,100,20,120", "--face_det_scale=0.5", "--max_fill_gap", "0",
                 "--color_match", "1", "--paste=feather", "--face_select=left:2")
    assert (args.is_voxceleb2, args.color_match) == (False, True)
    assert args.face_det_scale == 0.5 and isinstance(args.face_det_scale, float)
    assert args.max_fill_gap == 0 and isinstance(args.max_fill_gap, int)
    # The texts stay texts; the parsers of face_detection give their values.
    assert parse_box(args.box) == (10, 100, 20, 120)
    assert parse_face_select(args.face_select) == FaceSelect("left", index=2)
    assert "expected a boolean" in error("--is_voxceleb2", "maybe")


@pytest.mark.parametrize("box", ["1,2,3", "a,b,c,d", "10,5,0,40", "0,40,-1,40"])
def test_a_malformed_box_is_refused_by_the_boxes_own_message(box):
    assert error("--is_voxceleb2", "False", "--box", box).startswith(f"--box {box!r}")


def test_a_box_needs_sixteen_pixels_a_side():
    assert MIN_BOX_SIDE == 16
    assert parse("--is_voxceleb2", "False", "--box", "0,16,4,20").box == "0,16,4,20"
    assert error("--is_voxceleb2", "False", "--box", "0,15,0,100") == (
        "--box '0,15,0,100': expected a box at least 16 px high and wide, got 15x100"
    )
    assert "got 40x15" in error("--is_voxceleb2", "False", "--box", "0,40,5,20")


def test_box_rule_refuses_a_box_with_the_voxceleb2_crop():
    assert error("--box", "0,100,0,100") == (
        "--box and --is_voxceleb2 True both fix the face box; pass --is_voxceleb2 False with --box"
    )
    assert error("--box", "0,100,0,100", "--is_voxceleb2", "True").startswith("--box and --is_voxceleb2 True")


def test_pads_rule_refuses_pads_that_a_fixed_box_would_ignore():
    assert error("--pads", "0,10,0,0") == (
        "--pads 0,10,0,0: pads only boxes the face detector finds, and would be ignored with "
        "--is_voxceleb2 True (pass --is_voxceleb2 False to detect)"
    )
    assert error("--is_voxceleb2", "False", "--box", "0,100,0,100", "--pads=-2,0,0,0").endswith(
        "would be ignored with --box (give the padded box itself)"
    )
    # Zero pads (any spelling) pad nothing, so they go with a fixed box; non-zero pads with detection.
    assert parse("--is_voxceleb2", "False", "--box", "0,100,0,100", "--pads", "0, 0,0 ,0").pads == "0, 0,0 ,0"
    assert parse("--is_voxceleb2", "False", "--pads", "0,10,-5,5").pads == "0,10,-5,5"


def test_color_match_without_feather_is_one_line_and_with_it_is_accepted():
    for paste in ("full", "lower"):
        assert error("--color_match", "True", "--paste", paste) == (
            f"--color_match True matches colours in the feathered band of --paste feather and does nothing with "
            f"--paste {paste}; add --paste feather or drop --color_match"
        )
    args = parse("--color_match", "True", "--paste", "feather")
    assert (args.color_match, args.paste) == (True, "feather")


def test_box_rule_is_checked_before_pads_rule():
    # Both rules fail: the first declared (the box with the crop) is the one reported.
    assert error("--box", "0,100,0,100", "--pads", "1,1,1,1").startswith("--box and --is_voxceleb2 True")


def test_negative_pads_parse_in_the_equals_form():
    assert parse("--is_voxceleb2", "False", "--pads=-5,0,0,0").pads == "-5,0,0,0"


def test_negative_top_pad_parses_in_the_space_form():
    assert parse("--is_voxceleb2", "False", "--pads", "-5,0,0,0").pads == "-5,0,0,0"


@pytest.mark.parametrize("pads", ["0,10,0", "1,2,3,4,5", "a,0,0,0", "0.5,0,0,0", ""])
def test_malformed_pads_are_refused_by_the_pads_own_message(pads):
    assert error("--is_voxceleb2", "False", "--pads", pads).startswith(f"--pads {pads!r} must be four comma-separated integers")


@pytest.mark.parametrize("text, value", [
    ("first", FaceSelect("first")), ("central", FaceSelect("central")), ("left:3", FaceSelect("left", index=3)),
    ("nearest:10,50,20,60", FaceSelect("nearest", box=(10, 50, 20, 60))),
])
def test_face_select_accepts_every_rule(text, value):
    assert parse_face_select(parse("--face_select", text).face_select) == value


@pytest.mark.parametrize("text", ["biggest", "left:0", "nearest:50,10,0,1", "largest:2"])
def test_face_select_refuses_others_naming_the_valid_rules(text):
    message = error("--face_select", text)
    assert message.startswith(f"--face_select {text!r}: expected one of first, largest, central, left:N")


@pytest.mark.parametrize("argv, message", [
    (["--face_det_batch_size", "0"], "--face_det_batch_size 0: expected a value >= 1"),
    (["--face_det_scale", "-0.5"], "--face_det_scale -0.5: expected 0 <= value <= 1"),
    (["--face_det_scale", "1.5"], "--face_det_scale 1.5: expected 0 <= value <= 1"),
    (["--max_fill_gap", "-1"], "--max_fill_gap -1: expected a value >= 0"),
    (["--cut_threshold", "1.01"], "--cut_threshold 1.01: expected 0 <= value <= 1"),
    (["--cut_threshold", "-0.1"], "--cut_threshold -0.1: expected 0 <= value <= 1"),
    (["--no_face", "skip"], "--no_face 'skip': expected one of passthrough, nearest, fail"),
    (["--face_detector", "dlib"], "--face_detector 'dlib': expected one of s3fd, centerface, auto"),
    (["--paste", "half"], "--paste 'half': expected one of " + ", ".join(PASTE_MODES)),
    (["--face_det_batch_size", "two"], "argument --face_det_batch_size: invalid int value: 'two'; see --help"),
])
def test_out_of_range_values_are_one_line_naming_flag_value_and_range(argv, message):
    assert error(*argv) == message


def test_range_edges_are_inside():
    args = parse("--face_det_scale", "1", "--cut_threshold", "0", "--max_fill_gap", "0", "--face_det_batch_size", "1")
    assert (args.face_det_scale, args.cut_threshold, args.max_fill_gap, args.face_det_batch_size) == (1.0, 0.0, 0, 1)
    assert parse("--cut_threshold", "1").cut_threshold == 1.0


def test_choices_are_the_modes_the_code_implements():
    assert FACE_OPTIONS["no_face"].choices == NO_FACE_MODES
    assert FACE_OPTIONS["face_detector"].choices == FACE_DETECTORS
    assert FACE_OPTIONS["paste"].choices == PASTE_MODES
    for mode in NO_FACE_MODES:
        assert parse("--no_face", mode).no_face == mode


def test_help_shows_each_default_and_range():
    text = create_argparser(FACE_OPTIONS).format_help()
    flat = " ".join(text.split())
    assert "(default: 0.0; valid: 0 <= value <= 1)" in flat
    assert "(default: 'passthrough'; valid: one of passthrough, nearest, fail)" in flat
    assert "(default: '0,0,0,0')" in flat
    for name in FACE_OPTIONS:
        assert f"--{name}" in text


def test_each_rule_reads_only_the_flags_it_declares():
    # A parser holds a rule only when it has every flag the rule names, so a rule may read no other.
    assert [rule.flags for rule in FACE_OPTIONS.rules] == [("box", "is_voxceleb2"), ("pads", "box", "is_voxceleb2"),
                                                       ("color_match", "paste")]
    for rule in FACE_OPTIONS.rules:
        defaults = argparse.Namespace(**{name: FACE_OPTIONS[name].default for name in rule.flags})
        assert rule.check(defaults) is None
    # Without --box (a command that never takes one), the pads rule does not apply at all.
    detect_only = create_argparser(FACE_OPTIONS.without("box"))
    assert [rule.flags for rule in detect_only.flag_rules] == [("color_match", "paste")]
    assert detect_only.parse_args(["--pads", "0,10,0,0"]).pads == "0,10,0,0"
    assert parse_pads("0,10,0,0") == (0, 10, 0, 0)
