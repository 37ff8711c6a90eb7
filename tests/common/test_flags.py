"""common/flags.py: an option's declaration gives its parser flag, help, check and default views."""

import argparse

import pytest

from common.errors import Diff2LipError
from common.flags import (
    FlagRule,
    Option,
    Options,
    as_flags,
    at_least,
    between,
    create_argparser,
    one_of,
    str2bool,
    validate_flags,
)

LR = Option("lr", 1e-4, "learning rate", between(0, 1, low_open=True))
STEPS = Option("steps", 10, "optimizer steps", at_least(1))
MODE = Option("mode", "fast", "how to run", one_of("fast", "exact"))
FLAG = Option("flag", False, "a switch")


def test_an_option_is_typed_by_its_default_and_its_help_shows_default_and_range():
    parser = create_argparser(Options(LR, STEPS, MODE, FLAG))
    args = parser.parse_args(["--lr", "0.5", "--steps=3", "--mode", "exact", "--flag", "true"])
    assert (args.lr, args.steps, args.mode, args.flag) == (0.5, 3, "exact", True)
    assert isinstance(args.steps, int) and isinstance(args.lr, float)
    assert LR.help_text() == "learning rate (default: 0.0001; valid: 0 < value <= 1)"
    assert FLAG.help_text() == "a switch (default: False)"
    assert "optimizer steps (default: 10; valid: a value >= 1)" in " ".join(parser.format_help().split())


def test_a_bad_value_is_one_line_naming_the_flag_the_value_and_the_range():
    parser = create_argparser(Options(LR, STEPS, MODE))
    with pytest.raises(Diff2LipError, match=r"^--steps 0: expected a value >= 1$"):
        parser.parse_args(["--steps", "0"])
    with pytest.raises(Diff2LipError, match=r"^--mode 'slow': expected one of fast, exact$"):
        parser.parse_args(["--mode", "slow"])
    with pytest.raises(Diff2LipError, match=r"^unrecognized arguments: --ste 3; see --help$"):
        parser.parse_args(["--ste", "3"])  # no prefix abbreviations
    with pytest.raises(Diff2LipError, match=r"argument --steps: invalid int value: 'x'; see --help"):
        parser.parse_args(["--steps", "x"])


def test_defaults_are_a_view_of_the_declarations_and_later_declarations_win():
    group = Options(LR, STEPS, MODE)
    assert group.defaults() == {"lr": 1e-4, "steps": 10, "mode": "fast"}
    command = Options(group, STEPS.with_default(50), Option("seed", 0, "seed"))
    assert list(command) == ["lr", "steps", "mode", "seed"]  # a redeclared name keeps its place
    assert command.defaults()["steps"] == 50 and command["steps"].check is STEPS.check
    assert group.with_defaults(mode="exact").defaults() == {"lr": 1e-4, "steps": 10, "mode": "exact"}
    assert list(group.only("mode", "lr")) == ["mode", "lr"]
    assert list(group.without("lr")) == ["steps", "mode"]
    with pytest.raises(KeyError, match="no such options: nope"):
        group.with_defaults(nope=1)


def test_choices_come_from_a_one_of_check():
    assert MODE.choices == ("fast", "exact")
    assert STEPS.choices is None


def test_rules_run_after_the_checks_and_only_where_the_parser_has_their_flags():
    rule = FlagRule(("mode", "steps"), lambda a: "--mode exact needs --steps >= 5" if a.mode == "exact" and a.steps < 5 else None)
    group = Options(MODE, STEPS, rules=[rule])
    with pytest.raises(Diff2LipError, match=r"^--mode exact needs --steps >= 5$"):
        create_argparser(group).parse_args(["--mode", "exact", "--steps", "2"])
    assert create_argparser(group).parse_args(["--mode", "exact", "--steps", "7"]).steps == 7
    # A parser without --steps does not run the rule.
    assert create_argparser(group.only("mode")).parse_args(["--mode", "exact"]).mode == "exact"
    # validate_flags also checks a namespace set by other means (flags a checkpoint carries).
    with pytest.raises(Diff2LipError, match=r"^--steps -1: expected a value >= 1$"):
        validate_flags(argparse.Namespace(mode="fast", steps=-1), group, group.rules)


def test_as_flags_is_the_inverse_of_parsing():
    parser = create_argparser(Options(LR, STEPS, MODE, FLAG))
    settings = {"lr": 0.25, "steps": 7, "mode": "exact", "flag": True}
    assert vars(parser.parse_args(as_flags(settings))) == settings


@pytest.mark.parametrize("text,value", [("True", True), ("false", False), ("1", True), ("0", False), ("yes", True), ("N", False)])
def test_str2bool_takes_the_released_spellings(text, value):
    assert str2bool(text) is value


def test_str2bool_refuses_anything_else():
    with pytest.raises(argparse.ArgumentTypeError, match="expected a boolean"):
        str2bool("maybe")


def test_check_same_flags_names_the_first_changed_flag_both_values_and_counts_the_rest():
    from common.flags import check_same_flags

    args = argparse.Namespace(a=1, b="1,2", c=True, d=0.5)
    check_same_flags({"a": 1, "b": "1,2", "c": True}, args, ["a", "b", "c", "d"], "file 'x'", "fix it")  # d: not saved
    with pytest.raises(Diff2LipError) as caught:
        check_same_flags({"a": 2, "b": "1,2", "c": False}, args, ["a", "b", "c"], "file 'x'", "fix it")
    assert str(caught.value) == "file 'x' was made with --a 2, this run has --a 1 (and 1 more: --c); fix it"
