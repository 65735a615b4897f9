"""Every path and module the code and the docs cite exists, so a reader who follows a reference
lands somewhere: ``docs/<page>.md#<anchor>`` (the page, and the heading when one is named),
``llmcomm_tests/<floor>/<module>.py``, ``benchmarks/…``, ``ci/…``, ``slo_specs/…``, ``tests/…``,
package shorthand such as ``runtime/launch.py`` (inside ``llmcomm_tests/``), relative ``../…``
paths, a bare ``<NAME>.md``, dotted ``llmcomm_tests.<floor>.<module>`` names and ``:mod:`` roles."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "llmcomm_tests"
TOP_FOLDERS = ("llmcomm_tests", "benchmarks", "docs", "ci", "slo_specs", "tests")
FLOORS = sorted(p.name for p in (REPO / PACKAGE).iterdir() if (p / "__init__.py").exists())
# Files a reader writes, named in examples ("copy tiny-cpu.yaml to slo_specs/my-deployment.yaml").
EXAMPLE_FILES = {"slo_specs/my-deployment.yaml", "slo_specs/x.yaml"}

# A path never starts right after a word, a dot, a slash or a dash: that is inside a URL or a
# longer path (nccl-tests' doc/PERFORMANCE.md is not ours).
_START = r"(?<![\w./-])"
_TAIL = r"[\w.-]+(?:/[\w.-]+)*/?"
_ANCHOR = r"(?:#[\w-]+)?"
_PLACEHOLDER = r"(?![*<{$])"  # ``slo_specs/*.yaml``, ``docs/<page>.md``: no one file
_TOP_PATH = re.compile(_START + "((?:" + "|".join(TOP_FOLDERS) + ")/(?:" + _TAIL + ")?" + _ANCHOR + ")" + _PLACEHOLDER)
_SHORTHAND = re.compile(_START + "((?:" + "|".join(FLOORS) + r")/[\w/]*\w\.py)\b")
_RELATIVE = re.compile(_START + r"((?:\.\./)+" + _TAIL + _ANCHOR + ")")
_BARE_MARKDOWN = re.compile(_START + r"([\w-]+\.md\b" + _ANCHOR + ")")
_DOTTED = re.compile(r"(?<![\w.])(" + PACKAGE + r"(?:\.\w+)+)")
_RELATIVE_MODULE = re.compile(r":mod:`(\.+\w+(?:\.\w+)*)`")


# -- paths -----------------------------------------------------------------------------------------

def split_anchor(written: str) -> tuple[str, str]:
    """(path, anchor) of a cited path, without the sentence's closing dot."""
    path, _, anchor = written.partition("#")
    return path.rstrip("."), anchor


def cited_paths(text: str, cited_from: Path) -> list[tuple[str, Path]]:
    """(as written, file it names) for every path in ``text``, from the file ``cited_from`` (relative
    to the repository); paths with a placeholder (``*``, ``<name>``, ``{x}``, ``$X``) are left out."""
    found = [(w, REPO / split_anchor(w)[0]) for w in _TOP_PATH.findall(text)]
    found += [(w, REPO / PACKAGE / w) for w in _SHORTHAND.findall(text)]
    found += [(w, (REPO / cited_from).parent / split_anchor(w)[0]) for w in _RELATIVE.findall(text)]
    for written in _BARE_MARKDOWN.findall(text):
        beside = (REPO / cited_from).parent / split_anchor(written)[0]
        found.append((written, beside if beside.exists() else REPO / split_anchor(written)[0]))
    return [(w, path) for w, path in found if not any(c in w for c in "*<{$")]


def markdown_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces → '-'."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def leads_nowhere(written: str, path: Path) -> bool:
    if split_anchor(written)[0] in EXAMPLE_FILES:
        return False
    if not path.exists():
        return True
    anchor = split_anchor(written)[1]
    return bool(anchor) and path.suffix == ".md" and anchor not in markdown_anchors(path.read_text())


# -- modules ---------------------------------------------------------------------------------------

def module_file(dotted: str) -> Path | None:
    """The file a dotted name imports from: its module, or the package whose attribute it names."""
    here = REPO
    for i, part in enumerate(dotted.split(".")):
        if (here / part / "__init__.py").exists():
            here = here / part
        elif (here / f"{part}.py").exists():
            return here / f"{part}.py"  # what follows is an attribute of the module
        elif i and re.search(rf"^(?:def|class) {part}\b|^{part}\b.*=|import .*\b{part}\b",
                             (here / "__init__.py").read_text(), re.M):
            return here / "__init__.py"  # a name the package defines or re-exports
        else:
            return None
    return here / "__init__.py"


def cited_modules(text: str, cited_from: Path) -> list[tuple[str, Path | None]]:
    """(as written, file or None) for every ``llmcomm_tests.…`` name and relative ``:mod:`` role."""
    found = [(w, module_file(w.rstrip("."))) for w in _DOTTED.findall(text)]
    package = cited_from.parent.parts
    for written in _RELATIVE_MODULE.findall(text):
        dots = len(written) - len(written.lstrip("."))
        base = package[:len(package) - dots + 1]
        found.append((written, module_file(".".join(base + (written.lstrip("."),)))))
    return found


def missing(text: str, cited_from: Path) -> list[str]:
    """The references in ``text`` that lead nowhere."""
    out = [written for written, path in cited_paths(text, cited_from) if leads_nowhere(written, path)]
    return out + [written for written, path in cited_modules(text, cited_from) if path is None]


# -- what is read ----------------------------------------------------------------------------------

def python_prose(source: str, every_string: bool = False) -> str:
    """A Python source's comments and docstrings, and with ``every_string`` all its string literals
    (messages and help texts cite paths too; tests build paths that must not exist, so not theirs)."""
    out, statement_start = [], True
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out.append(tok.string)
        elif tok.type not in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
            if tok.type in (tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", -1)) and (
                    every_string or statement_start):
                out.append(tok.string)
            statement_start = tok.type == tokenize.NEWLINE
    return "\n".join(out)


def cited_files() -> list[Path]:
    """Every file whose text may cite a path, relative to the repository."""
    files = [p for folder in (PACKAGE, "benchmarks", "tests") for p in (REPO / folder).rglob("*.py")]
    files += [REPO / "README.md", REPO / "conftest.py"]
    files += list((REPO / "docs").glob("*.md")) + list((REPO / "slo_specs").glob("*.yaml"))
    files += [p for p in (REPO / PACKAGE).rglob("*") if p.suffix in (".yaml", ".json")]
    files += [p for p in (REPO / "ci").rglob("*") if p.is_file()]
    return sorted(p.relative_to(REPO) for p in files if "__pycache__" not in p.parts)


def text_of(path: Path) -> str:
    text = (REPO / path).read_text()
    if path.suffix != ".py":
        return text
    return python_prose(text, every_string=path.parts[0] != "tests")


@pytest.mark.parametrize("path", cited_files(), ids=str)
def test_every_cited_path_and_module_exists(path):
    assert missing(text_of(path), path) == []


# -- the scanner itself ----------------------------------------------------------------------------

def test_the_scanner_finds_what_a_text_cites():
    text = ("see docs/calibration.md and llmcomm_tests/runtime/launch.py, shorthand analytic/latency.py, "
            "benchmarks/timing_gate.py, README.md, slo_specs/*.yaml, docs/<page>.md, nccl-tests' "
            "doc/PERFORMANCE.md, https://example.org/docs/x.md and llmcomm_tests.runtime.launch.")
    here = Path("llmcomm_tests/runtime/recorder.py")
    written = [w for w, _ in cited_paths(text, here)] + [w for w, _ in cited_modules(text, here)]
    assert sorted(written) == sorted(["docs/calibration.md", "llmcomm_tests/runtime/launch.py",
                                      "analytic/latency.py", "benchmarks/timing_gate.py", "README.md",
                                      "llmcomm_tests.runtime.launch"])
    assert missing(text, here) == []


@pytest.mark.parametrize("planted", [
    "see docs/nowhere.md",
    "see docs/measurements.md#no-such-heading",
    "as llmcomm_tests/runtime/nowhere.py does",
    "the shorthand runtime/nowhere.py",
    "benchmarks/nowhere.py",
    "ci/nowhere.sh",
    "slo_specs/nowhere.yaml",
    "tests/test_nowhere.py",
    "notation follows ../shared/NOWHERE.md §2",
    "(NOWHERE.md §6)",
    "from llmcomm_tests.nowhere import x",
    "llmcomm_tests.runtime.nowhere",
    "(:mod:`.nowhere`)",
])
def test_the_scanner_flags_a_planted_missing_path(planted):
    assert missing(planted, Path("llmcomm_tests/spec/__init__.py")) != []


def test_an_anchor_must_name_a_heading_of_its_page():
    here = Path("llmcomm_tests/runtime/recorder.py")
    assert missing("docs/measurements.md#recorder-cost", here) == []
    assert missing("docs/measurements.md#recorder-costs", here) == ["docs/measurements.md#recorder-costs"]
    assert markdown_anchors("# A/B gate, or stored baselines?\n```\n# not a heading\n```\n## `x` (2 ms)") \
        == {"ab-gate-or-stored-baselines", "x-2-ms"}


def test_python_prose_is_comments_and_docstrings_unless_every_string_is_asked():
    source = ('"""Module: see docs/a.md."""\n'
              'X = "docs/b.md"  # see docs/c.md\n'
              'def f():\n    """See docs/d.md."""\n    return "docs/e.md"\n')
    assert [p for p in "abcde" if f"docs/{p}.md" in python_prose(source)] == ["a", "c", "d"]
    assert [p for p in "abcde" if f"docs/{p}.md" in python_prose(source, every_string=True)] == list("abcde")
