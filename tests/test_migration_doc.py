"""docs/MIGRATING_FROM_TFMOT.md: its python blocks run, in order, as one script."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_migration_snippets_run():
    text = open(os.path.join(ROOT, "docs", "MIGRATING_FROM_TFMOT.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 8
    namespace = {"__name__": "migration_doc"}
    for index, block in enumerate(blocks):
        exec(compile(block, f"MIGRATING_FROM_TFMOT.md block {index}", "exec"), namespace)  # noqa: S102
