"""docs/RESULTS.md says what the committed study JSONs say: every generated block rebuilds to the same text.

`tools/reproduce.py --study=X --report_only` rewrites a block from its JSON; a block that differs from
what its JSON gives would be a number the repository cannot show. The decided study's prose, outside
its block, may quote only figures the block prints.
"""

import json
import os
import re
import subprocess

import pytest

from reporting.decided_page import DECIDED_BEGIN_MARKER, DECIDED_END_MARKER, generated_decided_markdown
from reporting.long_page import LONG_BEGIN_MARKER, LONG_END_MARKER, generated_long_markdown
from reporting.results_page import BEGIN_MARKER, END_MARKER, generated_markdown
from reporting.structured_page import STRUCTURED_BEGIN_MARKER, STRUCTURED_END_MARKER, generated_structured_markdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "RESULTS.md")


def _json(name):
    with open(os.path.join(ROOT, "docs", "results", name)) as f:
        return json.load(f)


def _block(begin, end):
    text = open(PAGE).read()
    assert text.count(begin) == 1 and text.count(end) == 1, (begin, end)
    return text.split(begin)[1].split(end)[0].strip("\n")


BLOCKS = {
    "short": (BEGIN_MARKER, END_MARKER, lambda: generated_markdown(_json("reproduce.json"))),
    "long": (LONG_BEGIN_MARKER, LONG_END_MARKER,
             lambda: generated_long_markdown(_json("long_pilot.json"), _json("long_study.json"))),
    "long_v2": (DECIDED_BEGIN_MARKER, DECIDED_END_MARKER, lambda: generated_decided_markdown(_json("long_study_v2.json"))),
    "structured": (STRUCTURED_BEGIN_MARKER, STRUCTURED_END_MARKER,
                   lambda: generated_structured_markdown(_json("structured_study.json"), _json("long_study_v2.json"))),
}  # fmt: skip


def _study_writing_its_json():
    """True when a study running in this checkout has written docs/results/ JSON that the page has not caught up with."""
    try:
        changed = subprocess.run(["git", "status", "--porcelain", "--", "docs/results/"], cwd=ROOT, capture_output=True,
                                 text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return changed.returncode == 0 and any(line.endswith(".json") for line in changed.stdout.splitlines())


@pytest.mark.parametrize("study", sorted(BLOCKS))
def test_each_generated_block_is_what_its_json_rebuilds(study):
    if _study_writing_its_json():
        pytest.skip("a study JSON differs from the commit (a study is running here): the committed pair is what counts")
    begin, end, generate = BLOCKS[study]
    assert _block(begin, end) == generate().strip("\n"), (
        f"docs/RESULTS.md's {study} block differs from its JSON: run `PYTHONPATH=tools python tools/reproduce.py "
        f"--study={study} --report_only` and commit both"
    )


def test_the_decided_sections_prose_quotes_only_figures_its_block_prints():
    text = open(PAGE).read()
    before, after = text.split(DECIDED_BEGIN_MARKER)
    section = before[before.rindex("\n## "):] + DECIDED_BEGIN_MARKER + after.split("\n## ")[0]  # its "## " section
    block = _block(DECIDED_BEGIN_MARKER, DECIDED_END_MARKER)
    prose = section.replace(block, "")
    number = r"(?<![\w.])\d+\.\d+(?![\d])"
    quoted, printed = set(re.findall(number, prose)), set(re.findall(number, block))
    missing = quoted - printed
    assert not missing, f"figures in the decided section's prose that its generated block does not print: {missing}"
