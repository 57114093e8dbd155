"""The test tree collects as one: no two test modules share a file name.

Test folders have no ``__init__.py``, so pytest imports each test module under its bare file name;
a second ``test_x.py`` in another folder then fails the whole collection ("import file mismatch").
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TEST_ROOT = Path(__file__).resolve().parent


def test_no_two_test_modules_share_a_file_name():
    names = Counter(path.name for path in TEST_ROOT.rglob("*.py") if path.name != "conftest.py")
    assert not [name for name, count in names.items() if count > 1], sorted(
        str(p.relative_to(TEST_ROOT)) for p in TEST_ROOT.rglob("*.py") if names[p.name] > 1
    )
