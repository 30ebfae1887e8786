"""benchmarks/RESULTS.md: each benchmark owns a section between its markers."""

from __future__ import annotations

import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def write_section(begin: str, end: str, text: str, heading: str = "") -> None:
    """Replaces the text between ``begin`` and ``end`` (or appends the section,
    under ``heading``), writing the file atomically."""
    content = ""
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            content = f.read()
    block = f"{begin}\n{text}\n{end}"
    if begin in content:
        head, rest = content.split(begin, 1)
        content = head + block + rest.split(end, 1)[1]
    else:
        prefix = content.rstrip("\n") + "\n\n" if content else ""
        content = prefix + (heading + "\n" if heading else "") + block + "\n"
    with open(RESULTS + ".tmp", "w") as f:
        f.write(content)
    os.replace(RESULTS + ".tmp", RESULTS)
