"Shared fixtures: the project's root, and a tiny kelly project (manifest + one report notebook) in a temporary folder."
import os, subprocess, sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Under CI (CI=true) hypothesis draws the same examples on every machine and every run, keeps no example database
# and applies no timing checks, so a test that passes once passes every time. Elsewhere it explores as usual.
settings.register_profile('ci', derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
if os.environ.get('CI', '').strip().lower() not in ('', '0', 'false', 'no'):
    settings.load_profile('ci')

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Under pytest-xdist (`pytest -n 2`, as `make pytest` runs) each worker already has a core of its own: one thread per
# thread pool, set before any test module imports numpy, torch or numba, and inherited by every `kelly` subprocess.
# More threads than cores only spin (OpenBLAS and OpenMP busy-wait), burning the other worker's CPU. A test that wants
# more threads still asks for them (limit_threads(2), torch.set_num_threads); variables already set are kept.
THREAD_VARIABLES = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'NUMBA_NUM_THREADS')
if os.environ.get('PYTEST_XDIST_WORKER'):
    for _name in THREAD_VARIABLES:
        os.environ.setdefault(_name, '1')


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from one state of random, NumPy's global generator and torch's (when torch is loaded),
    so an unseeded draw the audit missed still draws the same numbers on every run."""
    import random
    import numpy as np
    random.seed(0)
    np.random.seed(0)
    if 'torch' in sys.modules:
        sys.modules['torch'].manual_seed(0)
    yield


@pytest.fixture(scope='module')
def torch_one_thread():
    "Tiny networks on a shared two-core machine run fastest on one thread; the setting is restored afterwards."
    import torch  # noqa: F401 (loaded first, so that limit_threads limits its pool too)
    from kelly.core import limit_threads
    with limit_threads(1):
        yield


@pytest.fixture
def root():
    return ROOT


@pytest.fixture
def demo_project(tmp_path):
    "A project with settings.ini and nbs/01_demo.ipynb, whose reports go to tmp_path/reports."
    from kelly.reports import _write_demo_project
    _write_demo_project(tmp_path)
    return tmp_path


def kelly_cli(*args, project=None, env=None, timeout=300, cwd=None):
    "Run the installed `kelly` command (in `project` if given, else the one we stand in); return the CompletedProcess."
    e = {**os.environ, 'KELLY_PROGRESS': '0', **(env or {})}
    if project is not None:
        e.update(KELLY_PROJECT=str(project), KELLY_REPORTS=str(Path(project) / 'reports'))
    where = cwd or project or ROOT
    return subprocess.run([str(BIN / 'kelly'), *args], capture_output=True, text=True, env=e, timeout=timeout,
                          cwd=where)


@pytest.fixture
def places(tmp_path, monkeypatch):
    "Empty stand-ins for the published reports and the user cache; returns `kelly.music.idaw.weight_places()`."
    from kelly.music import idaw
    monkeypatch.setenv('KELLY_REPORTS', str(tmp_path / 'reports'))
    monkeypatch.setenv('KELLY_CACHE', str(tmp_path / 'cache'))
    return idaw.weight_places()


def seeded_idaw_models(seed:int) -> dict:
    "The five iDAW networks, initialised from `seed`, in eval mode."
    import torch
    from kelly.music.idaw import MODELS
    torch.manual_seed(seed)
    return {k: v().eval() for k, v in MODELS.items()}
