"""Every third-party import is a declared dependency: deptry (run by `make lint`) passes on the
repository and fails on a copy of its configuration with an undeclared import."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPTRY = str(Path(sys.executable).parent / "deptry")


def deptry(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DEPTRY, *args, "--no-ansi"], cwd=root, capture_output=True, text=True, timeout=120
    )


def test_the_package_tests_and_scripts_declare_every_import():
    package = deptry(ROOT, ".")
    assert package.returncode == 0, package.stdout + package.stderr
    others = deptry(ROOT, "tests", "scripts", "--exclude", r"\.venv", "--ignore", "DEP002,DEP004")
    assert others.returncode == 0, others.stdout + others.stderr


def test_an_undeclared_import_fails(tmp_path: Path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "api").mkdir()
    # requests arrives only through other packages; pytest is a dev tool, not a dependency.
    (tmp_path / "api" / "leak.py").write_text("import requests\nimport pytest\nimport no_such\n")
    done = deptry(tmp_path, ".", "--ignore", "DEP002")  # the copy uses none of the others
    assert done.returncode == 1
    report = done.stderr  # deptry reports there
    assert "api/leak.py:1:8: DEP003 'requests' imported but it is a transitive dependency" in report
    assert "api/leak.py:2:8: DEP004 'pytest' imported but declared as a dev dependency" in report
    assert "api/leak.py:3:8: DEP001 'no_such' imported but missing from the dependency" in report
    assert "Found 3 dependency issues." in report
