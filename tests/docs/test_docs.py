"""The documentation: the MkDocs site builds strictly, and the README stays a short map whose
links all lead somewhere."""

import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
README_MAX_LINES = 250
# Markdown links and images: [text](target) / ![alt](target), target up to a space or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def nav_pages(nav) -> list:
    """Every page file named in an mkdocs.yml nav, in order."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def built_page(site_dir: str, page: str) -> str:
    """Where `mkdocs build` (use_directory_urls) writes the HTML of a docs page."""
    stem = page[: -len(".md")]
    if os.path.basename(stem) in ("index", "README"):
        stem = os.path.dirname(stem)
    return os.path.join(site_dir, stem, "index.html")


def relative_links(markdown: str) -> list:
    """The link targets of a Markdown text that point into the repository (no URL, no anchor only)."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)  # code blocks hold no links
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def test_mkdocs_strict_build_succeeds_and_writes_every_nav_page(tmp_path):
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8") as f:
        config = yaml.safe_load(f)
    pages = nav_pages(config["nav"])
    assert "index.md" in pages
    missing = [page for page in pages if not os.path.isfile(built_page(str(site), page))]
    assert not missing, f"nav pages without a built index.html: {missing}"


def test_every_docs_page_is_in_the_nav():
    with open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8") as f:
        pages = set(nav_pages(yaml.safe_load(f)["nav"]))
    docs = os.path.join(ROOT, "docs")
    on_disk = {
        os.path.relpath(os.path.join(folder, name), docs).replace(os.sep, "/")
        for folder, _, names in os.walk(docs) for name in names if name.endswith(".md")
    }
    assert on_disk - pages == set(), "docs pages missing from mkdocs.yml's nav"


def test_readme_is_a_map_of_at_most_250_lines():
    with open(README, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move details to docs/"


def test_readme_relative_links_point_at_existing_files():
    with open(README, encoding="utf-8") as f:
        targets = relative_links(f.read())
    assert targets, "README.md links to no docs page"
    broken = [t for t in targets if not os.path.exists(os.path.join(ROOT, t))]
    assert not broken, f"README.md links to missing files: {broken}"


def test_readme_test_command_is_make_test():
    # CI (.ci/run) runs exactly the README's test command.
    with open(README, encoding="utf-8") as f:
        text = f.read()
    assert re.search(r"^make test\b", text, flags=re.M)


def test_no_tracked_file_cites_the_external_compatibility_notes():
    # The compatibility facts live in docs/compatibility.md; no file may cite the outside
    # document they were first gathered in. The name is built here so this file does not cite it.
    needle = ("COMPAT" + ".md").encode()
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode().split("\0")
    citing = []
    for name in filter(None, files):
        path = os.path.join(ROOT, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                if needle in f.read():
                    citing.append(name)
    assert not citing, f"files citing a document the repository lacks: {citing}"
