"""Command-line options, each declared once.

An `Option` holds everything about one flag: its name, its default (which also gives its type),
its help text and the check of its value. A command's parser, its `--help`, its validation, the
guided-diffusion style `*_defaults()` dictionaries, the dataclasses of options (`options_dataclass`)
and the flags one command passes to another are all derived from these declarations, so they cannot
drift apart.

The released Diff2Lip command lines parse unchanged: `--flag value` and `--flag=value`, booleans
as True/False, true/false, 1/0. Prefix abbreviations are off, so a mistyped flag is an error
rather than another flag. Values are checked when a command parses its flags (and again for those
a network file sets), before any model is built or any file is touched; a bad value is one line
naming the flag, the value and what is valid.
"""

import argparse
import re
from dataclasses import dataclass, replace
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
    get_type_hints,
)

import torch

from .errors import Diff2LipError

# A check returns None for a good value, else the problem in words ("expected 0 < value < 1").
# The range checks also carry `valid`, the range in words, which `--help` shows.
FlagCheck = Callable[[Any], Optional[str]]


def _range_check(ok: Callable[[Any], bool], valid: str) -> FlagCheck:
    def check(v) -> Optional[str]:
        return None if ok(v) else f"expected {valid}"

    check.valid = valid
    return check


def at_least(minimum: float) -> FlagCheck:
    check = _range_check(lambda v: v >= minimum, f"a value >= {minimum}")
    check.minimum = minimum
    return check


def between(low: float, high: float, low_open: bool = False, high_open: bool = False) -> FlagCheck:
    check = _range_check(
        lambda v: (v > low if low_open else v >= low) and (v < high if high_open else v <= high),
        f"{low} {'<' if low_open else '<='} value {'<' if high_open else '<='} {high}",
    )
    if not low_open:
        check.minimum = low
    return check


def one_of(*choices: str) -> FlagCheck:
    check = _range_check(lambda v: v in choices, "one of " + ", ".join(c if c else "'' (automatic)" for c in choices))
    check.choices = choices
    return check


def check_device(value: str) -> Optional[str]:
    """'' (this process's GPU, else the CPU), cpu, or a CUDA device that this process can see."""
    if value == "":
        return None
    usage = "expected cpu, cuda or cuda:N ('' = this process's GPU if any, else cpu)"
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        return usage
    if device.type == "cpu":
        return None
    if device.type != "cuda":
        return usage
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to this process; use --device cpu, or '' to pick automatically"
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        return f"only {count} GPU(s) are visible (cuda:0 to cuda:{count - 1})"
    return None


def str2bool(v) -> bool:
    """Parse True/False, true/false, 1/0, yes/no, t/f, y/n."""
    if isinstance(v, bool):
        return v
    value = str(v).strip().lower()
    if value in ("yes", "true", "t", "y", "1"):
        return True
    if value in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False, 1/0), got {v!r}")


def _flag_type(default: Any) -> Callable[[str], Any]:
    if default is None:
        return str
    if isinstance(default, bool):
        return str2bool
    return type(default)


# ----------------------------------------------------------------------------------------------
# Declarations


@dataclass(frozen=True)
class Option:
    """One flag: `--name`, typed by its default, documented by `help`, validated by `check`."""

    name: str
    default: Any
    help: str = ""
    check: Optional[FlagCheck] = None

    @property
    def type(self) -> Callable[[str], Any]:
        return _flag_type(self.default)

    @property
    def choices(self) -> Optional[Tuple[str, ...]]:
        """The values a `one_of` check allows (for a menu), else None."""
        return getattr(self.check, "choices", None)

    @property
    def minimum(self) -> Optional[float]:
        """The smallest value an `at_least` or closed `between` check allows (for a number field), else None."""
        return getattr(self.check, "minimum", None)

    def help_text(self) -> str:
        """The `--help` line: the help, the default and, where the check states one, the valid range."""
        valid = getattr(self.check, "valid", None)
        note = f"default: {self.default!r}" + (f"; valid: {valid}" if valid else "")
        return f"{self.help} ({note})".strip()

    def problem(self, value: Any) -> Optional[str]:
        """None for a good value, else the one-line message naming the flag and the value."""
        problem = self.check(value) if self.check else None
        if problem:
            shown = repr(value) if isinstance(value, str) else value
            return f"--{self.name} {shown}: {problem}"
        return None

    def with_default(self, default: Any) -> "Option":
        return replace(self, default=default)


@dataclass(frozen=True)
class FlagRule:
    """A check of flags that only make sense together: `check(args)` returns None or the whole
    one-line message (naming the flags), and runs when a parser has all of `flags`."""

    flags: Tuple[str, ...]
    check: Callable[[argparse.Namespace], Optional[str]]

    def applies_to(self, names: Iterable[str]) -> bool:
        return set(self.flags) <= set(names)


class Options(Mapping[str, Option]):
    """An ordered group of declarations and the rules that check several of them together.

    Groups combine: `Options(MODEL_OPTIONS, Option("lr", 1e-4, "learning rate"))`; a later
    declaration of the same name replaces the earlier one (a command's own default or help).
    """

    def __init__(self, *items: Union[Option, "Options"], rules: Sequence[FlagRule] = ()):
        self._options: Dict[str, Option] = {}
        self.rules: List[FlagRule] = []
        for item in items:
            if isinstance(item, Options):
                self._options.update(item._options)
                self.rules.extend(r for r in item.rules if r not in self.rules)
            elif isinstance(item, Option):
                self._options[item.name] = item
            else:
                raise TypeError(f"Options takes Option or Options, not {type(item).__name__}")
        self.rules.extend(r for r in rules if r not in self.rules)

    def __getitem__(self, name: str) -> Option:
        return self._options[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._options)

    def __len__(self) -> int:
        return len(self._options)

    def defaults(self) -> dict:
        """`{name: default}`: the `*_defaults()` view of guided-diffusion's `script_util`."""
        return {name: option.default for name, option in self._options.items()}

    def _check_known(self, names: Iterable[str]) -> None:
        unknown = sorted(set(names) - set(self._options))
        if unknown:
            raise KeyError(f"no such options: {', '.join(unknown)}")

    def with_defaults(self, **defaults: Any) -> "Options":
        """The same declarations with other defaults (a command whose defaults differ)."""
        self._check_known(defaults)
        return Options(*(o.with_default(defaults[n]) if n in defaults else o for n, o in self._options.items()),
                       rules=self.rules)

    def only(self, *names: str) -> "Options":
        """The declarations of `names` (in that order), with the rules that concern only them."""
        return Options(*(self._options[n] for n in names), rules=[r for r in self.rules if r.applies_to(names)])

    def without(self, *names: str) -> "Options":
        self._check_known(names)
        return self.only(*(n for n in self._options if n not in names))


def options_dataclass(options: Mapping[str, Option], convert: Optional[Mapping[str, Callable[[Any], Any]]] = None):
    """A class decorator: the class becomes a dataclass of one field per declaration in `options`
    (in their order, after the fields the class itself declares), each defaulting to the declared
    default, and gains `from_flags(args, **values)`, which takes every field by name from parsed
    flags (`values` are taken as they are, in place of those flags).

    `convert[name]` turns a flag's value into the field's (the text "0,0,0,0" into a tuple), for the
    default and in `from_flags` alike; its return annotation is the field's type.
    """
    convert = dict(convert or {})

    def field_type(name: str, option: Option) -> Any:
        if name in convert:
            return get_type_hints(convert[name]).get("return", Any)
        return Any if option.default is None else type(option.default)

    def value(name: str, flag: Any) -> Any:
        return convert[name](flag) if name in convert else flag

    def decorate(cls):
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        for name, option in options.items():
            annotations[name] = field_type(name, option)
            setattr(cls, name, value(name, option.default))
        cls.__annotations__ = annotations

        def from_flags(kind, args, **values: Any):
            return kind(**{name: value(name, getattr(args, name)) for name in options if name not in values}, **values)

        cls.from_flags = classmethod(from_flags)
        return dataclass(cls)

    return decorate


def validate_flags(args: argparse.Namespace, options: Mapping[str, Option], rules: Sequence[FlagRule] = ()) -> None:
    """Raise `Diff2LipError` for the first flag whose value fails its check, then the first rule
    that fails; flags the namespace lacks are not looked at."""
    for name, option in options.items():
        if hasattr(args, name):
            problem = option.problem(getattr(args, name))
            if problem:
                raise Diff2LipError(problem)
    for rule in rules:
        problem = rule.check(args)
        if problem:
            raise Diff2LipError(problem)


# ----------------------------------------------------------------------------------------------
# argparse


def add_dict_to_argparser(parser: argparse.ArgumentParser, default_dict: dict) -> None:
    """The released helper: one `--key` per entry, typed by its default (no help, no checks)."""
    for k, v in default_dict.items():
        parser.add_argument(f"--{k}", default=v, type=_flag_type(v))


def args_to_dict(args, keys: Iterable[str]) -> dict:
    return {k: getattr(args, k) for k in keys}


def check_same_flags(saved: Mapping[str, Any], args, names: Iterable[str], source: str, fix: str) -> None:
    """Refuse `args` whose value of one of `names` differs from what `saved` (the flags that
    `source`, e.g. a checkpoint, was made with) holds: one line naming the flag, both values and
    `fix`. Names `saved` lacks (an older file) are not compared."""
    changed = [(n, saved[n], getattr(args, n)) for n in names if n in saved and saved[n] != getattr(args, n)]
    if changed:
        name, old, new = changed[0]
        more = f" (and {len(changed) - 1} more: {', '.join('--' + c[0] for c in changed[1:])})" if len(changed) > 1 else ""
        raise Diff2LipError(f"{source} was made with --{name} {old}, this run has --{name} {new}{more}; {fix}")


def as_flags(settings: dict) -> List[str]:
    """The command-line flags that set `settings`: {"lr": 0.1} -> ["--lr", "0.1"] (the inverse of
    parsing with `create_argparser`), for running one command from another."""
    return [arg for key, value in settings.items() for arg in (f"--{key}", str(value))]


def create_argparser(*groups: Union[Options, Option], description: str = "",
                     rules: Sequence[FlagRule] = ()) -> argparse.ArgumentParser:
    """An argparse parser of the declarations in `groups` (a later declaration of a name replaces
    an earlier one). `parse_args` validates the values once: every option's check, then the
    groups' rules that concern flags this parser has, then `rules`."""
    options = Options(*groups, rules=rules)
    parser = _ArgumentParser(description=description, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    for option in options.values():
        parser.add_argument(f"--{option.name}", default=option.default, type=option.type, help=option.help_text())
    parser.options = options
    parser.flag_rules = [r for r in options.rules if r.applies_to(options)]
    return parser


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises `Diff2LipError`, so a bad flag is one `error:` line and exit code 1,
    like every other bad input (entry points parse inside their error handler), and that
    validates the parsed values before anything is built from them."""

    options: Options = Options()
    flag_rules: Sequence[FlagRule] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # argparse reads a value that starts with '-' as a negative number only if it is one
        # number; comma lists of numbers (`--pads -5,0,0,0`) are values too, never flags.
        self._negative_number_matcher = re.compile(r"^-\d*\.?\d+(,-?\d*\.?\d+)*$")

    def error(self, message: str):
        raise Diff2LipError(f"{message}; see --help")

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        validate_flags(parsed, self.options, self.flag_rules)
        return parsed


# ----------------------------------------------------------------------------------------------
# Options that many commands share

DEVICE = Option("device", "", "cpu, cuda, cuda:1, ...; '' = this process's GPU if any, else cpu", check_device)
PROGRESS = Option("progress", True, "show progress bars")
