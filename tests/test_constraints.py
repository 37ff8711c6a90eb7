"""constraints.txt, which `make install` applies: it pins every requirement at a version that
requirements.txt allows, and (where the suite runs) the versions it runs on."""

from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from launchers import REPO_ROOT


def read(name: str) -> list:
    lines = (REPO_ROOT / name).read_text(encoding="utf-8").splitlines()
    return [Requirement(line) for line in (raw.split("#")[0].strip() for raw in lines) if line]


def test_every_requirement_is_pinned_within_its_bounds():
    pins = {canonicalize_name(r.name): r for r in read("constraints.txt")}
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in pins.values())
    for req in read("requirements.txt"):
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"{req.name} is not in constraints.txt; run make constraints"
        assert req.specifier.contains(next(iter(pin.specifier)).version), f"{pin} is outside {req}"


def test_the_suite_runs_on_the_pinned_versions_of_the_requirements():
    pins = {canonicalize_name(r.name): next(iter(r.specifier)).version for r in read("constraints.txt")}
    for req in read("requirements.txt"):
        installed = metadata.version(req.name)
        assert installed == pins[canonicalize_name(req.name)], (
            f"{req.name} {installed} is installed, constraints.txt pins {pins[canonicalize_name(req.name)]}: "
            "make install applies the pins; make constraints moves them"
        )
