"""The documentation points at things that exist: every relative link in README.md and docs/*.md, and every file
path written in backticks; README stays a short page for users (the details live in docs/)."""
import dataclasses
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
README_MAX_LINES = 300

# Backticked text starting with one of these (or equal to one of EXACT_PATHS) is taken for a repository path.
PATH_PREFIXES = ("trainers/", "datasets/", "scripts/", "configs/", "tests/", "docs/", "common/")
EXACT_PATHS = ("train.py", "requirements.txt")
PLACEHOLDER_CHARS = "<*{$"

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def markdown_files():
    return [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def prose_lines(path):
    """(line number, text) of the lines outside fenced code blocks."""
    inside = False
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if FENCE.match(line):
                inside = not inside
                continue
            if not inside:
                yield number, line


def relative_links(path):
    for number, line in prose_lines(path):
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if target.startswith(("http://", "https://", "mailto:", "#")):
                continue
            target = target.split("#", 1)[0]
            if target:
                yield number, target


def backticked_paths(path):
    for number, line in prose_lines(path):
        for _, span in CODE_SPAN.findall(line):
            words = span.strip().split()
            if not words:
                continue
            word = words[0]
            if not (word.startswith(PATH_PREFIXES) or word in EXACT_PATHS):
                continue
            if any(char in word for char in PLACEHOLDER_CHARS):
                continue
            yield number, word


def where(path, number):
    return f"{os.path.relpath(path, ROOT)}:{number}"


def test_there_are_docs_to_check():
    names = {os.path.basename(path) for path in markdown_files()}
    assert {"README.md", "method.md", "baselines.md", "protocols.md", "datasets.md", "performance.md",
            "contributing.md", "embedded_benchmark.md", "model_selection.md"} <= names


def test_every_relative_link_points_at_an_existing_file():
    dangling = []
    for path in markdown_files():
        for number, target in relative_links(path):
            if not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(path), target))):
                dangling.append(f"{where(path, number)}: link to {target}")
    assert not dangling, "links to files that do not exist:\n  " + "\n  ".join(dangling)


def test_every_backticked_repository_path_exists():
    dangling = []
    for path in markdown_files():
        for number, target in backticked_paths(path):
            if not os.path.exists(os.path.join(ROOT, target)):
                dangling.append(f"{where(path, number)}: `{target}`")
    assert not dangling, "paths in backticks that do not exist:\n  " + "\n  ".join(dangling)


def test_readme_is_short():
    with open(README, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move details into docs/")


def test_readme_keeps_the_commands_ci_and_users_rely_on():
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    assert "python3 -m pytest -q\n" in text
    assert "bash scripts/setup.sh\n" in text


def test_method_page_documents_every_ablation_config():
    with open(os.path.join(ROOT, "docs", "method.md"), encoding="utf-8") as handle:
        text = handle.read()
    configs = glob.glob(os.path.join(ROOT, "configs", "trainers", "DualMIPrompt", "ablation", "*.yaml"))
    assert configs
    missing = [name for name in sorted(os.path.basename(c)[:-len(".yaml")] for c in configs) if name not in text]
    assert not missing, "ablation configs missing from docs/method.md: " + ", ".join(missing)


def test_method_page_documents_every_option():
    pytest.importorskip("torch")
    from trainers.dualmiprompt_model import DualMIOptions

    with open(os.path.join(ROOT, "docs", "method.md"), encoding="utf-8") as handle:
        text = handle.read()
    missing = [field.name.upper() for field in dataclasses.fields(DualMIOptions)
               if f"`{field.name.upper()}`" not in text]
    assert not missing, "TRAINER.DUALMIPROMPT options missing from docs/method.md: " + ", ".join(missing)


def test_the_path_finder_sees_what_it_should(tmp_path):
    """The extraction rules themselves, on a small sample."""
    sample = tmp_path / "sample.md"
    sample.write_text(
        "See [a](elsewhere/page.html#part), [b](https://example.org), [c](#here) and `trainers/registry.py`,\n"
        "`scripts/xd_test.sh imagenet_a SEED`, `trainers/<name>_model.py`, `configs/*.yaml`, `OUTPUT`.\n"
        "```\n[d](nowhere.md) `trainers/nowhere.py`\n```\n", encoding="utf-8")
    assert [target for _, target in relative_links(str(sample))] == ["elsewhere/page.html"]
    assert [target for _, target in backticked_paths(str(sample))] == ["trainers/registry.py", "scripts/xd_test.sh"]
