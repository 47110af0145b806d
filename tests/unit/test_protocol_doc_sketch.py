"""docs/protocol.md's JavaScript sketch of a rebuild (what a provider app does with an offer during a
call) is the provider call page's own code, word for word: the page the browser tests run is the
sketch integrators copy, so the sketch cannot drift from what was tested."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"
PAGE = ROOT / "devstack" / "telehealth_devstack" / "console" / "static" / "call.js"
DOC_MARK = (
    '<!-- sketch: the block between the "sketch" marks in '
    "devstack/telehealth_devstack/console/static/call.js -->"
)


def doc_sketch() -> str:
    lines = DOC.read_text().splitlines()
    assert lines.count(DOC_MARK) == 1, "docs/protocol.md: exactly one rebuild sketch"
    start = lines.index(DOC_MARK) + 1
    assert lines[start] == "```js", "the sketch's mark is followed by a js block"
    end = lines.index("```", start + 1)
    return "\n".join(lines[start + 1 : end])


def page_sketch() -> str:
    text = PAGE.read_text()
    found = re.search(r"^ *// -- sketch: [^\n]*\n(.*?)^ *// -- end of sketch", text, re.S | re.M)
    assert found is not None, "call.js: the sketch's marks"
    return textwrap.dedent(found.group(1)).strip("\n")


def test_the_rebuild_sketch_in_the_doc_is_the_pages_code() -> None:
    assert doc_sketch() == page_sketch()


def test_the_sketch_answers_on_a_new_connection_and_keeps_the_old_until_media() -> None:
    sketch = doc_sketch()
    # What PROTOCOL.md's Recovery asks: a new connection, never a renegotiation of the live one...
    assert 'new Connection("answerer")' in sketch and "call.current.pc" not in sketch
    # ...the old one replaced only at the new one's first frame, 20 s given.
    assert "firstFrame(next, MEDIA_DEADLINE_MS)" in sketch and "MEDIA_DEADLINE_MS = 20000" in sketch
