"Shared fixtures: the project's root, and a tiny kelly project (manifest + one report notebook) in a temporary folder."
import os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def root():
    return ROOT


@pytest.fixture
def demo_project(tmp_path):
    "A project with settings.ini and nbs/01_demo.ipynb, whose reports go to tmp_path/reports."
    from kelly.reports import _write_demo_project
    _write_demo_project(tmp_path)
    return tmp_path


def kelly_cli(*args, project=None, env=None, timeout=300):
    "Run the installed `kelly` command; return the CompletedProcess."
    e = {**os.environ, 'KELLY_PROGRESS': '0', **(env or {})}
    if project is not None: e.update(KELLY_PROJECT=str(project), KELLY_REPORTS=str(Path(project) / 'reports'))
    return subprocess.run([str(BIN / 'kelly'), *args], capture_output=True, text=True, env=e, timeout=timeout)
