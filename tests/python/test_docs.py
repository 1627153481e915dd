"""docs/python.md's five-line example runs as written, on the test checkpoint."""
import contextlib
import io
import os
import re

from conftest import CHAT_CKPT

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "python.md")


def test_five_line_example_runs():
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    block = re.search(r"\n\n((?:    .*\n){5})\n", text).group(1)
    lines = [line[4:] for line in block.splitlines()]
    assert len(lines) == 5 and lines[0] == "import mnemo"
    code = re.sub(r'mnemo\.load\("[^"]*"\)', f"mnemo.load({CHAT_CKPT!r})", "\n".join(lines))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/python.md", "exec"), {})
    assert out.getvalue().endswith("\n")   # it printed the reply (whatever the tiny model says)
