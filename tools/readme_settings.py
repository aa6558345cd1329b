"""Rewrite README's settings table from the settings model (``propstream settings``).

    .venv/bin/python tools/readme_settings.py

tests/propstream/test_cli_settings.py fails while README's copy differs.
"""

from __future__ import annotations

import re
from pathlib import Path

from propstream.cli import settings_table

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- settings:begin[^\n]*-->\n).*?(\n<!-- settings:end -->)", re.S)

if __name__ == "__main__":
    text = README.read_text()
    new = BLOCK.sub(lambda m: m.group(1) + settings_table() + m.group(2), text)
    README.write_text(new)
    print("README settings table " + ("updated" if new != text else "already current"))
