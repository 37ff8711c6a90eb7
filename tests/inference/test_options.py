"""generate.py's options, each declared once (inference/options.py): the options dataclass of the
clip pipeline (`SamplingOptions`) is derived from the declarations, so a new sampling option is one
declaration plus its use."""

import dataclasses

from common.flags import Option, Options, at_least, create_argparser, options_dataclass
from face_detection import parse_box, parse_pads
from inference.lipsync import SamplingOptions
from inference.options import CLIP_OPTIONS, GENERATE_OPTIONS, RUN_OPTIONS, SAMPLING_OPTIONS, create_parser

# The flags whose text becomes another value in SamplingOptions.
PARSED = {"box": lambda text: parse_box(text) if text else None, "pads": parse_pads}


def test_every_sampling_options_field_is_a_declared_option_with_its_default():
    fields = {f.name: f.default for f in dataclasses.fields(SamplingOptions)}
    assert set(fields) == set(CLIP_OPTIONS)
    for name, default in fields.items():
        declared = GENERATE_OPTIONS[name].default
        assert default == PARSED.get(name, lambda v: v)(declared), name
    assert SamplingOptions().box is None and SamplingOptions().pads == (0, 0, 0, 0)


def test_every_sampling_option_but_those_of_the_run_is_a_field():
    assert set(CLIP_OPTIONS) == {"image_size", "face_hide_percentage", *(set(SAMPLING_OPTIONS) - set(RUN_OPTIONS))}
    assert set(RUN_OPTIONS) <= set(SAMPLING_OPTIONS)


def test_from_args_takes_every_field_by_name_and_parses_box_and_pads():
    args = create_parser().parse_args(["--cache_depth", "2", "--sampler", "dpm++3m", "--is_voxceleb2", "False",
                                       "--box", "10,100,20,120", "--image_size", "64"])
    opts = SamplingOptions.from_args(args)
    assert (opts.cache_depth, opts.sampler, opts.image_size) == (2, "dpm++3m", 64) and opts.box == (10, 100, 20, 120)
    assert SamplingOptions.from_args(create_parser().parse_args(["--is_voxceleb2", "False", "--pads", "1,2,3,4"])).pads == (1, 2, 3, 4)
    for name in CLIP_OPTIONS:
        if name not in PARSED:
            assert getattr(opts, name) == getattr(args, name), name


def test_from_args_picks_up_an_option_added_to_the_declarations():
    new = Option("mouth_gain", 4, "a sampling option added later", at_least(1))

    @options_dataclass(Options(CLIP_OPTIONS, new), convert={"pads": parse_pads})
    class Extended:
        pass

    assert Extended().mouth_gain == 4
    parser = create_argparser(GENERATE_OPTIONS, new)
    assert "a sampling option added later" in parser.format_help()
    assert Extended.from_flags(parser.parse_args(["--mouth_gain", "9"])).mouth_gain == 9
    assert Extended.from_flags(parser.parse_args([]), mouth_gain=2).mouth_gain == 2
