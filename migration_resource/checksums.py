"""Checksums of revision files: what makes an edited, already applied migration visible.

`code_checksum` is the one that matters. It covers what a revision *does*: the parsed code
of the file, written out in a canonical form and hashed (SHA-256). Comments, docstrings,
blank lines, indentation style, quote style, line breaks inside brackets, trailing commas and
line endings are not behaviour, so `ruff format`, a CRLF checkout or a corrected comment in
an applied revision leave the checksum alone and the next deploy goes ahead. A changed
statement (another column name, another SQL string, an added `op.execute`, another
`down_revision`) is behaviour and changes it, so the deploy refuses the database as
`inconsistent` rather than pretend the revision it runs is the one that ran. The migration
gate's `# migration-approve: ...` line is a comment: adding it to an applied revision does
not change that revision's checksum.

The canonical form is independent of the Python version: the Lambda runs 3.12 while the
CDK synth and the CLI run 3.11, and they must agree on the same file. `ast.dump` does not
(3.12 adds `type_params` to functions and classes), so the form is written here: a node's
type name, then its fields sorted by name, leaving out fields that are None or an empty list
(a field a later version adds, empty for ordinary code, changes nothing), and never the
positions (`lineno`, `col_offset`, ...). Constants are written with their type, strings
JSON-escaped (`repr` of a str depends on the Unicode database, which differs between
versions) and bytes by `repr`; the `u` prefix (`Constant.kind`) is left out, `u"x"` is `"x"`.
A docstring (the first statement of a module, class or function when it is a string
constant) is left out. f-strings are parsed to JoinedStr/FormattedValue by every version,
but 3.12 adds empty string parts to format specs holding a field (`f"{x:>{w}}"`) that 3.11
and 3.13 do not: empty parts are dropped and adjacent ones joined, and an empty format spec
(`f"{x:}"`) is the same as none.

Only the file is read (no import, no compile), with the standard library alone, so the CDK
app computes the same history digest at synth time that the engine records, and the engine
compares it with one query. `file_checksum` (SHA-256 of the bytes) stays: audit rows
written before the code checksum existed hold it, and the engine accepts either.

The synth has computed every code checksum already, so the Lambda bundle carries them:
`write_manifest` puts `code-checksums.json` beside the revision files (each file's byte
SHA-256 and code checksum). A cold Lambda then hashes bytes (microseconds) instead of
parsing and walking every file (a quarter of a millisecond each, most of a long history's
overhead on a first deploy). A file whose bytes differ from its manifest entry, or a
missing or unreadable manifest, is computed as before: the manifest only saves work.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import re
import warnings
from pathlib import Path

# A revision whose file contains this runs statements outside a transaction; if it dies
# half-way the database may hold part of it, so a failure must block until resolved.
NON_TRANSACTIONAL_MARKER = "autocommit_block"
# The older spelling of the same thing: `op.execute("COMMIT")` ends the revision's
# transaction (teams wrote it before ALTER TYPE ... ADD VALUE could run in one).
_EXPLICIT_COMMIT = re.compile(
    r"""execute\(\s*(?:sa\.text\(\s*)?[rbu]?["']\s*(COMMIT|END)\b""", re.I
)

# First line of the canonical form: a new form gets a new number, so it can never be
# mistaken for the old one.
_CANONICAL_FORM = "code-checksum/1\n"
_WITH_DOCSTRING = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_TRAILING_SPACE = " \t\f\v"
MANIFEST_NAME = "code-checksums.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def file_checksum(path: Path) -> str:
    """Legacy checksum: SHA-256 of the file's bytes (any edit at all changes it)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_checksum(path: Path) -> str:
    """The code checksum of the file as it is now (computed once per version of the file:
    a run records it at a revision's start and again in the history digest)."""
    stat = path.stat()
    return _code_checksum(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4096)
def _code_checksum(path_text: str, mtime_ns: int, size: int) -> str:
    """SHA-256 (64 hex characters) of the canonical form of the revision's parsed code.

    Formatting, comments and docstrings do not change it; a changed statement does (see the
    module docstring for the form).

    A file that does not parse still gets a checksum, and this function never raises for
    its content: loading the scripts reports the syntax error itself, with the file and
    line, and a checksum that raised would only hide that message behind a traceback. Such
    a file is hashed as text instead: line endings normalised to LF, trailing whitespace of
    every line and blank lines at the end dropped. The same goes for code nested so deeply
    that the parser gives up (thousands of chained operators); how deep it may go differs
    between Python versions, so such a file may have a different checksum under another
    interpreter: an edit is then reported that was not made, never the other way round.
    """
    path = Path(path_text)
    source = path.read_bytes()
    known = _manifest(str(path.parent)).get(path.name)
    if known is not None and known[0] == hashlib.sha256(source).hexdigest():
        return known[1]
    try:
        # An invalid escape such as "\d" is a SyntaxWarning (DeprecationWarning before
        # 3.12), and a SyntaxError where warnings are errors: not what the file does.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        return _text_checksum(source)
    return hashlib.sha256(_canonical(tree).encode("utf-8", "surrogatepass")).hexdigest()


def write_manifest(versions_dir: Path) -> Path:
    """`code-checksums.json` in `versions_dir`: the checksums of its revision files, for the
    engine to look up instead of computing (the bundle's copy, written at synth)."""
    files = {
        path.name: {"sha256": file_checksum(path), "code": code_checksum(path)}
        for path in sorted(versions_dir.glob("*.py"))
    }
    manifest = versions_dir / MANIFEST_NAME
    manifest.write_text(json.dumps({"form": _CANONICAL_FORM.strip(), "files": files},
                                   indent=1, sort_keys=True) + "\n")
    return manifest


@functools.lru_cache(maxsize=64)
def _manifest(directory: str) -> dict[str, tuple[str, str]]:
    """name → (byte SHA-256, code checksum) from the directory's manifest; empty without one.

    Anything unexpected in it (another canonical form, a malformed entry) leaves the entry
    out: the checksum is then computed, never taken on trust from a file we cannot read."""
    try:
        document = json.loads((Path(directory) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict) or document.get("form") != _CANONICAL_FORM.strip():
        return {}
    files = document.get("files")
    if not isinstance(files, dict):
        return {}
    return {
        name: (entry["sha256"], entry["code"]) for name, entry in files.items()
        if isinstance(entry, dict) and all(
            isinstance(entry.get(key), str) and _SHA256.fullmatch(entry[key])
            for key in ("sha256", "code"))
    }


def clear_caches() -> None:
    """Forget computed checksums and read manifests (what a new process starts without)."""
    _code_checksum.cache_clear()
    _manifest.cache_clear()
    _is_transactional.cache_clear()


def history_digest(versions_dir: Path) -> str:
    """SHA-256 over every revision file's name and code checksum, in name order."""
    digest = hashlib.sha256()
    for path in sorted(versions_dir.glob("*.py")):
        digest.update(f"{path.name}\0{code_checksum(path)}\n".encode())
    return digest.hexdigest()


def is_transactional(path: Path) -> bool:
    """False when a failure may leave part of the revision applied (runs block until resolved).

    The online helpers of `migration_resource.online` that commit as they go (a batched
    backfill, a concurrent index) make a revision non-transactional, unless they are all it
    does: such a revision is resumable (`is_resumable`) and a failure needs no resolving.
    """
    stat = path.stat()
    return _is_transactional(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4096)
def _is_transactional(path_text: str, mtime_ns: int, size: int) -> bool:
    """`is_transactional` for one version of the file (a run asks several times)."""
    text = Path(path_text).read_text(errors="replace")
    if NON_TRANSACTIONAL_MARKER in text or _EXPLICIT_COMMIT.search(text) is not None:
        return False
    return _ONLINE_MODULE not in text or _online_steps(text) != _MIXED


def is_resumable(path: Path) -> bool:
    """True when the revision's steps that commit as they go are all online helpers, and its
    upgrade() and downgrade() hold nothing else: run again, it resumes where it stopped."""
    text = path.read_text(errors="replace")
    return (NON_TRANSACTIONAL_MARKER not in text and _EXPLICIT_COMMIT.search(text) is None
            and _ONLINE_MODULE in text and _online_steps(text) == _RESUMABLE)


# The helpers that leave the revision's transaction, and every helper (each is safe to run
# again: it resumes, or finds its work done).
_ONLINE_MODULE = "migration_resource.online"
_LEAVING = frozenset({"backfill", "create_index_concurrently", "drop_index_concurrently",
                      "reindex_concurrently", "add_unique_constraint"})
_HELPERS = _LEAVING | {"add_constraint_not_valid", "validate_constraint"}
_MIXED, _RESUMABLE, _NONE = "mixed", "resumable", "none"


def _online_steps(text: str) -> str:
    """`none` (no helper leaves the transaction), `resumable` (each function that calls one
    holds only helper calls) or `mixed` (other statements beside them, or unparsable)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return _MIXED
    verdict = _NONE
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or node.name not in ("upgrade", "downgrade"):
            continue
        if not any(_helper_call(call, _LEAVING) for call in ast.walk(node)):
            continue
        if not all(_only_helper(statement) for statement in node.body):
            return _MIXED
        verdict = _RESUMABLE
    return verdict


def _helper_call(node: ast.AST, names: frozenset[str]) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.id if isinstance(func, ast.Name) else (
        func.attr if isinstance(func, ast.Attribute) else "")
    return name in names


def _only_helper(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Pass | ast.Import | ast.ImportFrom):
        return True
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
        return True  # a docstring
    value = statement.value if isinstance(statement, ast.Expr | ast.Assign) else None
    return value is not None and _helper_call(value, _HELPERS)


# -- the canonical form ---------------------------------------------------------------------
def _canonical(tree: ast.AST) -> str:
    """`Type(field=value,...)`, lists as `[a,b]`; iterative, so nesting depth costs no stack.

    The stack holds text to write as is (punctuation, and plain values already written out by
    `_value`), nodes and lists still to expand; text is pushed in reverse, popped in order.
    """
    out = [_CANONICAL_FORM]
    pending: list[object] = [tree]
    while pending:
        item = pending.pop()
        if type(item) is str:
            out.append(item)
        elif isinstance(item, ast.AST):
            parts: list[object] = [type(item).__name__ + "("]
            for name, value in _fields(item):
                parts += [name + "=", _expand(value), ","]
            parts.append(")")
            pending.extend(reversed(parts))
        else:
            assert isinstance(item, list)
            parts = ["["]
            for element in item:
                parts += [_expand(element), ","]
            parts.append("]")
            pending.extend(reversed(parts))
    return "".join(out)


def _expand(value: object) -> object:
    """A node or a list to expand later, or a plain value written out now."""
    return value if isinstance(value, ast.AST | list) else _value(value)


_SORTED_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(node: ast.AST) -> list[tuple[str, object]]:
    """The fields that say what the node does, sorted by name."""
    if isinstance(node, ast.Constant):
        return [("value", node.value)]  # always (None is a value here); never `kind`
    names = _SORTED_FIELDS.get(type(node))
    if names is None:
        names = _SORTED_FIELDS[type(node)] = tuple(sorted(node._fields))
    fields: list[tuple[str, object]] = []
    for name in names:
        value: object = getattr(node, name, None)
        if name == "body" and isinstance(node, _WITH_DOCSTRING) and _has_docstring(node):
            value = node.body[1:]
        elif name == "values" and isinstance(node, ast.JoinedStr):
            value = _joined_parts(node.values)
        elif name == "format_spec" and isinstance(node, ast.FormattedValue) and isinstance(
                node.format_spec, ast.JoinedStr) and not _joined_parts(node.format_spec.values):
            value = None  # f"{x:}" is f"{x}"
        if value is None or (isinstance(value, list) and not value):
            continue
        fields.append((name, value))
    return fields


def _has_docstring(
    node: ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef,
) -> bool:
    first = node.body[0] if node.body else None
    return (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str))


def _joined_parts(values: list[ast.expr]) -> list[ast.expr]:
    """An f-string's parts with empty strings dropped and adjacent strings joined."""
    parts: list[ast.expr] = []
    for value in values:
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            if not value.value:
                continue
            previous = parts[-1] if parts else None
            if isinstance(previous, ast.Constant) and isinstance(previous.value, str):
                parts[-1] = ast.Constant(value=previous.value + value.value)
                continue
        parts.append(value)
    return parts


def _value(value: object) -> str:
    """A constant or a plain field (identifier, number, flag) with its type."""
    kind = type(value).__name__
    if isinstance(value, str):
        return f"{kind}:{json.dumps(value)}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{kind}:{value:#x}"  # decimal conversion of a huge int is limited; hex is not
    return f"{kind}:{value!r}"  # bytes, bool, None, float, complex, Ellipsis


def _text_checksum(source: bytes) -> str:
    text = source.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    lines = [line.rstrip(_TRAILING_SPACE) for line in _LINE_BREAK.split(text)]
    normalised = "\n".join(lines).rstrip("\n")
    return hashlib.sha256(normalised.encode("utf-8", "surrogateescape")).hexdigest()
