"""A fresh clone stands alone: nothing in the code, tests, benchmarks or CI names a path outside it.

The scanner reads every file under ``SCANNED`` (and the root-level entry points) and fails on:

* a path built from ``__file__`` (``Path(__file__).parents[N]``, ``.parent`` chains,
  ``os.path.dirname``, ``/ ".."``, and names bound to such paths, then climbed again) that climbs
  above the repository root;
* a string or comment naming a relative path that starts with two dots and a slash (relative to the
  working directory, which is the root), or ``".."`` given to a filesystem call;
* an absolute path into a machine's own folders (work, home, root, opt, tmp ...), or a path in the
  user's home given to a path constructor or filesystem call;
* in shell and PowerShell scripts, ``$(dirname "$0")/..`` or ``Split-Path -Parent $PSScriptRoot``
  chains that climb above the root, and any other ``..`` path segment.

It also checks the vendored corpus against its MANIFEST and that the bundled sample regenerates
byte for byte from it.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import re
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus"
SCANNED = ("tests", "bench", "shared", ".ci", "handlers", "scripts")
ROOT_FILES = ("function_app.py",)
SKIPPED_DIRS = {"__pycache__", "node_modules", ".venv", ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache"}
# Vendored data (checked against its MANIFEST below) and generated samples: no code, only payloads.
DATA_DIRS = {PurePosixPath("tests/corpus"), PurePosixPath("shared/samples")}

# Absolute paths into a machine's own folders. ARM ids (/subscriptions/...) and URL paths are not
# filesystem paths, so only these roots are refused.
_MACHINE_ROOTS = ("work", "home", "root", "opt", "mnt", "srv", "media", "tmp", "Users", "workspace")
_ABSOLUTE = re.compile(r"^(?:/(?:" + "|".join(_MACHINE_ROOTS) + r")(?:/|$)|[A-Za-z]:\\)")
# A home-relative path given to a path constructor or filesystem call (text that merely names one,
# such as "requests looks ~/.netrc up", reads nothing).
_HOME = re.compile(r"^~[^/]*(?:/|$)")
_TOKEN = re.compile(r"[^\s'\"`(),;=<>\[\]{}]+")
_UP = ".."
_CLIMBS = (_UP + "/", _UP + "\\")  # a relative path whose first step leaves the working directory


@dataclass(frozen=True, order=True)
class Escape:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _text_escapes(rel: str, line: int, text: str) -> Iterator[Escape]:
    """Tokens of a string or comment (starting on ``line``) that name a path outside the repository."""
    for offset, part in enumerate(text.splitlines()):
        for token in _TOKEN.findall(part):
            if token.startswith(_CLIMBS):
                yield Escape(rel, line + offset, f"relative path climbing out of the repository: {token!r}")
            elif _ABSOLUTE.match(token):
                yield Escape(rel, line + offset, f"absolute path outside the repository: {token!r}")


# -- Python -----------------------------------------------------------------------------------------

_PATH_TYPES = {"Path", "PurePath", "PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"}
_SAME_PATH_METHODS = {"resolve", "absolute", "expanduser", "abspath", "realpath", "normpath", "fspath", "str"}
# Calls whose (first) argument is a filesystem path, relative to the working directory (the root).
_FS_CALLS = {
    "open",
    "chdir",
    "listdir",
    "scandir",
    "walk",
    "glob",
    "iglob",
    "exists",
    "isfile",
    "isdir",
    "copy",
    "copy2",
    "copyfile",
    "copytree",
    "rmtree",
    "move",
    "read_text",
    "read_bytes",
}


class _Escaped(Exception):
    def __init__(self, node: ast.AST, what: str) -> None:
        super().__init__(what)
        self.node = node
        self.what = what


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


class _PathEvaluator:
    """Evaluates path expressions symbolically: a path is a tuple of parts relative to the root."""

    def __init__(self, rel: PurePosixPath) -> None:
        self.file = tuple(rel.parts)
        self.names: dict[str, tuple[str, ...]] = {}

    def _up(self, node: ast.AST, parts: tuple[str, ...], count: int) -> tuple[str, ...]:
        if count > len(parts):
            raise _Escaped(node, f"{count - len(parts)} level(s) above the repository root")
        return parts[: len(parts) - count]

    def _join(self, node: ast.AST, parts: tuple[str, ...], text: str) -> tuple[str, ...]:
        if text.startswith(("/", "~")):
            if _ABSOLUTE.match(text) or _HOME.match(text):
                raise _Escaped(node, f"absolute path outside the repository: {text!r}")
            return ("<absolute>",)  # somewhere else entirely; not ours to judge
        for piece in re.split(r"[/\\]", text):
            if piece in {"", "."}:
                continue
            parts = self._up(node, parts, 1) if piece == ".." else (*parts, piece)
        return parts

    def evaluate(self, node: ast.AST) -> tuple[str, ...] | None:
        """The path ``node`` denotes relative to the root, or None when it is not a known path."""
        if isinstance(node, ast.Name):
            if node.id == "__file__":
                return self.file
            return self.names.get(node.id)
        if isinstance(node, ast.Attribute):
            if node.attr == "parent":
                base = self.evaluate(node.value)
                return None if base is None else self._up(node, base, 1)
            if node.attr == "__file__":
                return self.file
            return None
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
            if node.value.attr == "parents" and isinstance(node.slice, ast.Constant):
                base = self.evaluate(node.value.value)
                index = node.slice.value
                if base is None or not isinstance(index, int):
                    return None
                return self._up(node, base, index + 1)
            return None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            base = self.evaluate(node.left)
            if base is not None and isinstance(node.right, ast.Constant) and isinstance(node.right.value, str):
                return self._join(node, base, node.right.value)
            return None
        if isinstance(node, ast.Call):
            name = _call_name(node)
            func = node.func
            receiver = self.evaluate(func.value) if isinstance(func, ast.Attribute) else None
            if name in _PATH_TYPES and node.args:
                return self._from_argument(node, node.args[0])
            if name == "cwd" and isinstance(func, ast.Attribute):
                return ()
            if name in _SAME_PATH_METHODS:
                if receiver is not None:
                    return receiver
                return self.evaluate(node.args[0]) if node.args else None
            if name == "dirname" and node.args:
                base = self.evaluate(node.args[0])
                return None if base is None else self._up(node, base, 1)
            if name in {"joinpath", "join"}:
                args = list(node.args)
                base = receiver
                if base is None and name == "join" and args:
                    base = self.evaluate(args.pop(0))
                if base is None:
                    return None
                for arg in args:
                    if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                        return None
                    base = self._join(node, base, arg.value)
                return base
            if name == "with_name" and receiver is not None:
                return self._up(node, receiver, 1)
        return None

    def _from_argument(self, node: ast.AST, arg: ast.AST) -> tuple[str, ...] | None:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return self._join(node, (), arg.value)  # relative to the working directory: the root
        return self.evaluate(arg)

    def fs_argument(self, node: ast.Call) -> None:
        """A filesystem call given a literal path: judge it relative to the root."""
        for arg in [*node.args[:1], *(k.value for k in node.keywords if k.arg in {"cwd", "path", "file"})]:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                self._join(node, (), arg.value)


def _python_escapes(rel: PurePosixPath, source: str) -> Iterator[Escape]:
    tree = ast.parse(source)
    evaluator = _PathEvaluator(rel)
    found: set[Escape] = set()

    def judge(node: ast.AST, action: str = "evaluate") -> tuple[str, ...] | None:
        try:
            if action == "fs" and isinstance(node, ast.Call):
                evaluator.fs_argument(node)
                return None
            return evaluator.evaluate(node)
        except _Escaped as exc:
            segment = ast.get_source_segment(source, exc.node) or ""
            found.add(Escape(str(rel), getattr(exc.node, "lineno", 0), f"{exc.what}: {segment}"))
            return None

    # Bindings first, in source order, so a name climbed later knows what it holds (one flat namespace:
    # a name bound to anything that is not a known path forgets its earlier path).
    assignments = [n for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign)) and n.value is not None]
    for node in sorted(assignments, key=lambda n: (n.lineno, n.col_offset)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        assert node.value is not None
        value = judge(node.value)
        for target in targets:
            if isinstance(target, ast.Name):
                if value is None:
                    evaluator.names.pop(target.id, None)
                else:
                    evaluator.names[target.id] = value
    for node in ast.walk(tree):
        if isinstance(node, ast.expr):
            judge(node)
        if isinstance(node, ast.Call) and _call_name(node) in _FS_CALLS:
            judge(node, "fs")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.update(_text_escapes(str(rel), node.lineno, node.value))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found.update(_text_escapes(str(rel), token.start[0], token.string))
    yield from sorted(found)


# -- shell and PowerShell ---------------------------------------------------------------------------

_SH_ANCHOR = re.compile(
    r"\$\(\s*dirname\s+(?:--\s+)?\"?\$(?:0|\{?BASH_SOURCE(?:\[0\])?\}?)\"?\s*\)\"?((?:/\.\.)*)"
    r"|\$PSScriptRoot((?:[/\\]\.\.)*)"
)
_SPLIT_PARENT = re.compile(r"Split-Path\s+(?:-Parent\s+)?", re.IGNORECASE)
_DOTDOT = re.compile(r"(?:^|[\s\"'=(:/\\])\.\.(?=[/\\\s\"')]|$)")


def _script_escapes(rel: PurePosixPath, text: str) -> Iterator[Escape]:
    depth = len(rel.parts) - 1  # the script's folder, counted from the root
    for number, line in enumerate(text.splitlines(), start=1):
        code = line.split("#", 1)[0] if not line.lstrip().startswith("#!") else ""
        consumed = line
        for match in _SH_ANCHOR.finditer(code):
            ups = (match.group(1) or match.group(2) or "").count("..")
            if "$PSScriptRoot" in match.group(0):
                ups += len(_SPLIT_PARENT.findall(code[: match.start()]))
            if ups > depth:
                yield Escape(
                    str(rel), number, f"climbs {ups - depth} level(s) above the repository root: {line.strip()}"
                )
            consumed = consumed.replace(match.group(0), "")
        uncommented = consumed.split("#", 1)[0] if not consumed.lstrip().startswith("#!") else ""
        if _DOTDOT.search(uncommented):
            yield Escape(str(rel), number, f"'..' path not anchored at the script: {line.strip()}")
        yield from _text_escapes(str(rel), number, line)


# -- the repository -------------------------------------------------------------------------------


def scanned_files(root: Path = ROOT) -> Iterator[PurePosixPath]:
    for name in ROOT_FILES:
        if (root / name).is_file():
            yield PurePosixPath(name)
    for top in SCANNED:
        base = root / top
        if not base.exists():
            continue
        for path in sorted(base.rglob("*")):
            rel = PurePosixPath(path.relative_to(root).as_posix())
            if not path.is_file() or SKIPPED_DIRS.intersection(rel.parts) or path.suffix == ".pyc":
                continue
            if any(rel.is_relative_to(data) for data in DATA_DIRS):
                continue
            yield rel


def escapes_in(rel: PurePosixPath, text: str) -> list[Escape]:
    """Every place in ``text`` (the content of ``rel``) that names a path outside the repository."""
    if rel.suffix == ".py":
        return list(_python_escapes(rel, text))
    if rel.suffix in {".sh", ".ps1", ".bash"} or text.startswith("#!") or rel.parent.name == ".ci":
        return list(_script_escapes(rel, text))
    found: list[Escape] = []
    for number, line in enumerate(text.splitlines(), start=1):
        found.extend(_text_escapes(str(rel), number, line))
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def test_nothing_names_a_path_outside_the_repository() -> None:
    files = list(scanned_files())
    assert any(f.parts[0] == ".ci" for f in files) and any(f.name == "sample_estate.py" for f in files)
    escapes: list[Escape] = []
    for rel in files:
        text = _read(ROOT / rel)
        if text is not None:
            escapes.extend(escapes_in(rel, text))
    assert not escapes, "paths outside the repository:\n" + "\n".join(map(str, escapes))


# The scanner itself: each of these must be caught. (Built from pieces so this file stays clean.)
UP = ".."
MACHINE = "/" + "work"
PARENTS = "par" + "ents"
PARENT = "." + "par" + "ent"


@pytest.mark.parametrize(
    ("rel", "source"),
    [
        ("tests/test_x.py", "from pathlib import Path\nC = Path(__file__).resolve()." + PARENTS + '[2] / "shared"\n'),
        (
            "tests/test_x.py",
            "from pathlib import Path\nROOT = Path(__file__).resolve().parents[1]\nC = ROOT" + PARENT + ' / "s"\n',
        ),
        ("tests/test_x.py", "from pathlib import Path\nC = Path(__file__).parent.parent.parent\n"),
        ("tests/test_x.py", 'import os\nC = os.path.join(os.path.dirname(os.path.dirname(__file__)), "' + UP + '")\n'),
        ("tests/test_x.py", 'from pathlib import Path\nC = Path(__file__).parents[1] / "' + UP + '" / "shared"\n'),
        ("tests/test_x.py", 'from pathlib import Path\nC = Path("' + UP + '/shared/corpus")\n'),
        ("tests/test_x.py", 'C = "' + UP + '/shared/corpus/host.schema.json"\n'),
        ("tests/test_x.py", 'import os\nos.chdir("' + UP + '")\n'),
        ("tests/test_x.py", "from pathlib import Path\nC = Path.cwd().parent\n"),
        ("tests/test_x.py", '"""Reads ``' + UP + '/shared/corpus``."""\n'),
        ("tests/test_x.py", "# see " + UP + "/shared/corpus\nX = 1\n"),
        ("tests/test_x.py", 'C = "' + MACHINE + '/shared/corpus"\n'),
        ("bench/x.py", 'from pathlib import Path\nC = Path("' + "~" + '/corpus")\n'),
        (".ci/run", '#!/usr/bin/env bash\ncd "$(dirname "$0")/' + UP + "/" + UP + '"\n'),
        (".ci/run", "#!/usr/bin/env bash\ncp " + UP + "/shared/corpus/x.json tests/\n"),
        ("scripts/x.sh", "#!/bin/sh\nls " + MACHINE + "/shared\n"),
        ("scripts/x.ps1", "$root = Split-Path -Parent (Split-Path -Parent $PSScriptRoot)\n"),
    ],
)
def test_scanner_catches_an_escape(rel: str, source: str) -> None:
    assert escapes_in(PurePosixPath(rel), source), source


@pytest.mark.parametrize(
    ("rel", "source"),
    [
        (
            "tests/test_x.py",
            'from pathlib import Path\nROOT = Path(__file__).resolve().parents[1]\nC = ROOT / "tests"\n',
        ),
        ("tests/fakes/x.py", "from pathlib import Path\nC = Path(__file__).parent.parent.parent\n"),
        ("tests/test_x.py", 'from pathlib import Path\nC = Path(__file__).parents[0] / "corpus" / "x.json"\n'),
        ("tests/test_x.py", 'ARM = "/subscriptions/s/providers/Microsoft.Storage/storageAccounts/' + UP + '/x"\n'),
        ("tests/test_x.py", 'NAMES = ["' + UP + '", "."]\n'),
        ("tests/test_x.py", '"""The id ``.../storageAccounts/a`` of an account."""\n'),
        ("shared/x.py", '"""requests looks ``' + "~" + '/.netrc`` up for every call."""\n'),
        ("shared/x.py", 'URL = "https://example.com/work/items"\n'),
        (".ci/run", '#!/usr/bin/env bash\ncd "$(dirname "$0")/' + UP + '"\n'),
        ("scripts/x.sh", '#!/bin/sh\nroot=$(CDPATH=\'\' cd -- "$(dirname -- "$0")/' + UP + '" && pwd)\n'),
        ("scripts/x.ps1", "$root = Split-Path -Parent $PSScriptRoot\n"),
    ],
)
def test_scanner_accepts_paths_inside(rel: str, source: str) -> None:
    assert escapes_in(PurePosixPath(rel), source) == []


# -- the vendored corpus ----------------------------------------------------------------------------


def _manifest() -> list[dict[str, str]]:
    with (CORPUS / "MANIFEST.tsv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _corpus_files() -> Iterable[str]:
    return sorted(
        p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.is_file() and p.name != "MANIFEST.tsv"
    )


def test_every_vendored_file_is_in_the_manifest_with_its_source() -> None:
    rows = _manifest()
    listed = [row["file"] for row in rows]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert sorted(listed) == list(_corpus_files()), "tests/corpus and its MANIFEST.tsv disagree"
    for row in rows:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", row["repo"]), row
        assert row["path"] and not row["path"].startswith("/") and ".." not in row["path"].split("/"), row
        assert PurePosixPath(row["path"]).name.split(".")[0] == PurePosixPath(row["file"]).name.split(".")[0], row
        assert re.fullmatch(r"[0-9a-f]{40}", row["commit"]), row
        data = (CORPUS / row["file"]).read_bytes()
        assert int(row["bytes"]) == len(data), row["file"]
        assert row["sha256"] == hashlib.sha256(data).hexdigest(), f"{row['file']} differs from the vendored copy"


def test_the_sample_regenerates_byte_for_byte_from_the_vendored_corpus() -> None:
    from tests.sample_estate import OUT, render

    files = render()
    assert set(files) == {p.name for p in OUT.glob("*.json")}
    for name, text in files.items():
        assert (OUT / name).read_bytes() == text.encode("utf-8"), (
            f"shared/samples/{name}: run python -m tests.sample_estate"
        )
