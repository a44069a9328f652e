"""Find the Python the local deploy runs the Lambda bundle with: the Lambda runtime's version.

The bundle is built for CPython 3.12 (cdk_app.bundling.RUNTIME), so its compiled wheels import
only under a 3.12. A machine offers one in a few usual ways; each candidate is asked its
version before it is used, since a pyenv shim on PATH may point at a version not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

LAMBDA_VERSION = (3, 12)
VERSION_TEXT = ".".join(str(part) for part in LAMBDA_VERSION)
HOW_TO_GET_ONE = (
    f"no Python {VERSION_TEXT} found for the Lambda bundle (looked at LAMBDA_PYTHON, "
    f"python{VERSION_TEXT} on PATH, pyenv and uv); install one with "
    f"`uv python install {VERSION_TEXT}` or `pyenv install {VERSION_TEXT}`, or set "
    f"LAMBDA_PYTHON=/path/to/python{VERSION_TEXT}"
)


class LambdaPythonMissing(RuntimeError):
    """No usable Python of the Lambda runtime's version; the message says how to get one."""


def find_lambda_python(env: Mapping[str, str] | None = None) -> str:
    """The first candidate that really is a Python 3.12, else LambdaPythonMissing.

    LAMBDA_PYTHON, when set, is the only candidate: a wrong one is named, not skipped.
    """
    env = os.environ if env is None else env
    ask = _output
    explicit = env.get("LAMBDA_PYTHON", "").strip()
    if explicit:
        if _is_lambda_python(explicit, ask):
            return explicit
        raise LambdaPythonMissing(
            f"LAMBDA_PYTHON={explicit} is not a Python {VERSION_TEXT}; point it at one, or "
            "unset it to look on PATH, in pyenv and in uv")
    for candidate in _candidates(env, ask):
        if _is_lambda_python(candidate, ask):
            return candidate
    raise LambdaPythonMissing(HOW_TO_GET_ONE)


def _candidates(env: Mapping[str, str], ask: Callable[[list[str]], str | None]) -> Iterator[str]:
    on_path = shutil.which(f"python{VERSION_TEXT}", path=env.get("PATH"))
    if on_path:
        yield on_path
    pyenv_root = env.get("PYENV_ROOT") or (
        ask(["pyenv", "root"]) if shutil.which("pyenv", path=env.get("PATH")) else None)
    for root in (pyenv_root, str(Path.home() / ".pyenv")):
        if root:
            for version in sorted(Path(root.strip()).glob(f"versions/{VERSION_TEXT}.*"),
                                  reverse=True):
                yield str(version / "bin" / f"python{VERSION_TEXT}")
    if shutil.which("uv", path=env.get("PATH")):
        found = ask(["uv", "python", "find", VERSION_TEXT])
        if found:
            yield found.strip()


def _is_lambda_python(candidate: str, ask: Callable[[list[str]], str | None]) -> bool:
    if not Path(candidate).exists() and shutil.which(candidate) is None:
        return False
    answer = ask([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    return answer is not None and answer.strip() == VERSION_TEXT


def _output(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None
