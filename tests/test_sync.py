"kelly/ must be exactly what nbdev-export makes of nbs/, and nbs/ exactly what nbdev-clean leaves."
import shutil, subprocess
from pathlib import Path

import pytest

from conftest import BIN, ROOT


def _tree(d: Path) -> dict:
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob('*'))
            if p.is_file() and '__pycache__' not in p.parts and '.ipynb_checkpoints' not in p.parts}


@pytest.fixture(scope='module')
def regenerated(tmp_path_factory):
    "A copy of the project in which nbdev-export and nbdev-clean have run."
    copy = tmp_path_factory.mktemp('sync')
    for f in ('pyproject.toml', 'settings.ini'):
        shutil.copy(ROOT / f, copy / f)
    for d in ('nbs', 'kelly'):
        shutil.copytree(ROOT / d, copy / d, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints'))
    for cmd in ('nbdev-export', 'nbdev-clean'):
        res = subprocess.run([str(BIN / cmd)], cwd=copy, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f'{cmd} failed:\n{res.stderr[-2000:]}'
    return copy


@pytest.mark.parametrize('folder,fix', [('kelly', 'run nbdev-export (or make export) and commit kelly/'),
                                        ('nbs', 'run nbdev-clean (or make export) and commit nbs/')])
def test_in_sync(regenerated, folder, fix):
    before, after = _tree(ROOT / folder), _tree(regenerated / folder)
    changed = sorted(str(p) for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert not changed, f'{folder}/ is out of step with nbs/ in {changed}: {fix}'


def test_sync_check_can_fail(tmp_path):
    "The comparison notices a notebook edit that was not exported."
    nb = ROOT / 'nbs' / '05_pitch.ipynb'
    copy = tmp_path / 'p'
    shutil.copytree(ROOT / 'nbs', copy / 'nbs')
    shutil.copytree(ROOT / 'kelly', copy / 'kelly')
    for f in ('pyproject.toml', 'settings.ini'):
        shutil.copy(ROOT / f, copy / f)
    txt = (copy / 'nbs' / nb.name).read_text().replace('NOTE_NAMES = (', 'NOTE_NAMES_CHANGED = (', 1)
    (copy / 'nbs' / nb.name).write_text(txt)
    before = (copy / 'kelly' / 'pitch.py').read_bytes()
    subprocess.run([str(BIN / 'nbdev-export')], cwd=copy, check=True, capture_output=True)
    assert (copy / 'kelly' / 'pitch.py').read_bytes() != before


def test_parameters_tag_survives_clean(regenerated):
    "nbdev-clean keeps the papermill `parameters` tag (allowed_cell_metadata_keys): reports run with the right values."
    import nbformat
    nb = nbformat.read(regenerated / 'nbs' / '05_pitch.ipynb', as_version=4)
    assert any('parameters' in c.metadata.get('tags', []) for c in nb.cells)
