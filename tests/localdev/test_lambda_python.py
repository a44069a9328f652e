"""Which Python the local deploy runs the Lambda bundle with: real interpreters, found the
ways a machine offers them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from localdev.lambda_python import (
    HOW_TO_GET_ONE,
    VERSION_TEXT,
    LambdaPythonMissing,
    find_lambda_python,
)


def a_real_lambda_python() -> str:
    try:
        return find_lambda_python()
    except LambdaPythonMissing:
        pytest.fail(f"this machine needs a Python {VERSION_TEXT} for the local deploy")


def test_lambda_python_names_the_interpreter_to_use() -> None:
    python = a_real_lambda_python()
    assert find_lambda_python({"LAMBDA_PYTHON": python, "PATH": ""}) == python


def test_a_lambda_python_of_another_version_is_named_not_skipped() -> None:
    assert sys.version_info[:2] != (3, 12), "the tests run under the project's venv Python"
    with pytest.raises(LambdaPythonMissing, match=r"LAMBDA_PYTHON=.* is not a Python 3\.12"):
        find_lambda_python({"LAMBDA_PYTHON": sys.executable, "PATH": ""})


def test_a_pyenv_installation_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a pyenv root holding a 3.12 (a link to a real one) and nothing on PATH
    real = a_real_lambda_python()
    bin_dir = tmp_path / "pyenv" / "versions" / f"{VERSION_TEXT}.9" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / f"python{VERSION_TEXT}").symlink_to(real)
    monkeypatch.setenv("HOME", str(tmp_path))
    found = find_lambda_python({"PYENV_ROOT": str(tmp_path / "pyenv"), "PATH": ""})
    assert found == str(bin_dir / f"python{VERSION_TEXT}")


def test_none_anywhere_says_how_to_get_one(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pyenv either
    with pytest.raises(LambdaPythonMissing) as raised:
        find_lambda_python({"PATH": str(tmp_path)})
    assert str(raised.value) == HOW_TO_GET_ONE
    assert "uv python install 3.12" in HOW_TO_GET_ONE and "LAMBDA_PYTHON" in HOW_TO_GET_ONE
