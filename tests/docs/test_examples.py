"""Every shell and Python example in the documentation runs.

A fenced block whose language is ``bash``, ``sh``, ``shell``, ``console``, ``python`` or ``pycon``
is an example. The blocks of one page run in order, in one fresh directory holding a copy of the
repository's ``configs/``, with ``telemon`` on ``PATH`` and ``TELEMON_STATE_DIR`` in that
directory: a page can build on what its earlier blocks wrote, as a reader following it would.

- ``bash``/``sh``/``shell``: the block is a script (``bash -e``).
- ``console``: the lines that start with ``$ `` (and their ``\\`` continuations) are the commands;
  the other lines are their output, shown, not compared.
- ``python``: the block is a script; ``pycon``: a doctest session, compared.

An HTML comment on the line before the fence changes that:

- ``<!-- example: skip REASON -->``: not run, because of REASON (a Kafka cluster, certificates,
  real sensors, ...). The reason is required.
- ``<!-- example: exit N -->``: the example is expected to exit with status N (a refusal shown on
  purpose).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
LANGUAGES = {"bash", "sh", "shell", "console", "python", "pycon"}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*\{?\s*\.?(?P<lang>[\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*example:\s*(?P<verb>\w+)\s*(?P<arg>.*?)\s*-->\s*$")
TIMEOUT_S = 120
#: Runs a pycon block (argv[1]) as a doctest session; exit 1 on a mismatch.
DOCTEST = """
import doctest, sys
test = doctest.DocTestParser().get_doctest(sys.argv[1], {}, sys.argv[2], sys.argv[2], 0)
flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
sys.exit(1 if doctest.DocTestRunner(optionflags=flags).run(test).failed else 0)
"""


@dataclass(frozen=True)
class Example:
    """One fenced block of a page."""

    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    skip: str | None  # the reason, when marked skip
    exit: int

    @property
    def where(self) -> str:
        return f"{shown(self.page)}:{self.line}"


def shown(page: Path) -> str:
    """The page's path as reports show it: from the repository's root when it is in it."""
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def examples(page: Path) -> list[Example]:
    """The example blocks of ``page``, in order; a malformed marker is an error naming its line."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Example] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match["indent"], match["fence"], match["lang"].lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        if lang not in LANGUAGES:
            continue
        skip, exit_status = None, 0
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = MARKER.match(lines[before]) if before >= 0 else None
        if marker:
            verb, arg = marker["verb"], marker["arg"]
            where = f"{shown(page)}:{before + 1}"
            if verb == "skip":
                if not arg:
                    raise ValueError(f"{where}: `example: skip` needs a reason")
                skip = arg
            elif verb == "exit" and arg.isdigit():
                exit_status = int(arg)
            else:
                raise ValueError(f"{where}: unknown example marker {lines[before].strip()!r}")
        found.append(Example(page, start + 1, lang, "\n".join(body) + "\n", skip, exit_status))
    return found


def console_commands(code: str) -> str:
    """The commands of a console transcript (``$ `` lines and their continuations)."""
    commands: list[str] = []
    continued = False
    for line in code.splitlines():
        if continued:
            commands.append(line)
        elif line.startswith("$ "):
            commands.append(line[2:])
        else:
            continue
        continued = line.endswith("\\")
    return "\n".join(commands) + "\n"


def run(example: Example, cwd: Path, env: dict[str, str]) -> str | None:
    """Run one example in ``cwd``; what went wrong (with its output), or None."""
    if example.lang == "python":
        argv = [sys.executable, "-c", example.code]
    elif example.lang == "pycon":
        argv = [sys.executable, "-c", DOCTEST, example.code, example.where]
    else:
        script = console_commands(example.code) if example.lang == "console" else example.code
        argv = ["bash", "-e", "-o", "pipefail", "-c", script]
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return f"{example.where}: still running after {TIMEOUT_S} s"
    if done.returncode != example.exit:
        return (
            f"{example.where}: exit status {done.returncode}, expected {example.exit}\n"
            f"--- code\n{example.code}--- stdout\n{done.stdout[-4000:]}--- stderr\n{done.stderr[-4000:]}"
        )
    return None


def run_page(page: Path, workdir: Path) -> list[str]:
    """Run the page's examples in order in ``workdir``; what went wrong, one entry per failed example
    (a failed one does not stop the others: all of a page's failures in one report)."""
    runnable = [e for e in examples(page) if e.skip is None]
    if not runnable:
        return []
    shutil.copytree(ROOT / "configs", workdir / "configs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMON_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TELEMON_STATE_DIR"] = str(workdir / "state")
    env["COLUMNS"] = "100"
    return [error for example in runnable if (error := run(example, workdir, env))]


@pytest.mark.parametrize("page", PAGES, ids=shown)
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    """The page's examples run in order, each with the exit status it is shown with."""
    failures = run_page(page, tmp_path)
    assert not failures, "\n\n".join(failures)


def test_the_runner(tmp_path: Path) -> None:
    """Blocks share the page's directory in order; pycon is compared; ``exit`` and ``skip`` hold."""
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\necho 41 > n\n```\n\n"
        "```pycon\n>>> int(open('n').read()) + 1\n42\n"
        ">>> import os; os.environ['TELEMON_STATE_DIR'] != ''\nTrue\n```\n"
        "<!-- example: exit 3 -->\n```console\n$ exit 3\nnothing\n```\n"
        "<!-- example: skip needs a Kafka cluster -->\n```sh\nfalse\n```\n"
        "```text\nnot run\n```\n"
        "```pycon\n>>> 1 + 1\n3\n```\n"
    )
    [failure] = run_page(page, tmp_path / "work")
    assert failure.startswith(f"{page}:23: exit status 1")
    page.write_text("<!-- example: skip -->\n```bash\ntrue\n```\n")
    with pytest.raises(ValueError, match="needs a reason"):
        examples(page)


def test_markers_are_well_formed() -> None:
    """Every marker parses, and every skip names its reason (``examples`` raises otherwise)."""
    skipped = [e for page in PAGES for e in examples(page) if e.skip]
    for example in skipped:
        assert len(example.skip or "") >= 8, f"{example.where}: give the skip a reason"


def test_console_commands() -> None:
    """Commands are the ``$ `` lines and their continuations; the rest is output."""
    transcript = (
        "$ telemon rules check \\\n    configs/rules.yaml\nconfigs/rules.yaml: ok\n$ echo done\ndone\n"
    )
    assert console_commands(transcript) == "telemon rules check \\\n    configs/rules.yaml\necho done\n"
