"""The example of ``docs/indexes.md`` runs and checks its own values."""

from __future__ import annotations

import re
from pathlib import Path

from dask_zcollection.store import MemoryStore

ROOT = Path(__file__).resolve().parents[2]


def test_the_docs_example_runs() -> None:
    text = (ROOT / "docs" / "indexes.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    scope: dict[str, object] = {}
    try:
        exec(compile(code, "docs/indexes.md", "exec"), scope)
        assert scope["col"].indexes() == ["six"]  # type: ignore[attr-defined]
    finally:
        MemoryStore.forget("indexed")
