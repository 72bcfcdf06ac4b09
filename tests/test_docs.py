"The docs site: a page per notebook, each with its API entries, an API index, and figures that render offline."
import re

import pytest

from conftest import ROOT


def _documented_names(module):
    "The functions and classes a module exports (nbdev documents those, not constants)."
    import importlib, inspect
    m = importlib.import_module(module)
    return [n for n in m.__all__ if inspect.isfunction(getattr(m, n)) or inspect.isclass(getattr(m, n))]


@pytest.fixture(scope='module')
def site_unexecuted(tmp_path_factory):
    "Every notebook, without execution: the structure of the whole site."
    from kelly.docs import build_docs
    return build_docs(out=tmp_path_factory.mktemp('site') / '_docs', execute=False)


@pytest.fixture(scope='module')
def site_executed(tmp_path_factory):
    "The foundation's notebooks, executed: the API entries and figures as readers see them."
    from kelly.docs import build_docs
    nbs = ROOT / 'nbs'
    return build_docs(out=tmp_path_factory.mktemp('site') / '_docs', execute=True,
                      notebooks=[nbs / 'index.ipynb', nbs / '00_core.ipynb', nbs / '05_pitch.ipynb'])


def test_a_page_per_notebook(site_unexecuted):
    from kelly.docs import doc_notebooks, page_name
    nbs = ROOT / 'nbs'
    for nb in doc_notebooks(nbs):
        page = 'index' if nb.name == 'index.ipynb' else page_name(nb, nbs)
        assert (site_unexecuted / f'{page}.html').is_file(), f'no page for {nb}'


def test_api_index_lists_every_exported_name(site_unexecuted):
    from kelly._modidx import d
    api = (site_unexecuted / 'api.html').read_text()
    modules = sorted(d['syms'])
    assert {'kelly.core', 'kelly.pitch', 'kelly.reports', 'kelly.bench', 'kelly.docs', 'kelly.cli'} <= set(modules)
    for module in modules:
        for name in _documented_names(module):
            assert f'>{name}<' in api, f'{module}.{name} missing from the API index'


def test_executed_pages_have_entries_and_offline_figures(site_executed):
    core = (site_executed / 'core.html').read_text()
    for name in _documented_names('kelly.core'):
        assert f'id="{name.lower()}"' in core.lower(), f'no API entry for kelly.core.{name}'
    pitch = (site_executed / 'pitch.html').read_text()
    assert 'Plotly.newPlot' in pitch
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', pitch)
    assert any(s.startswith('_static/plotly.min.js') for s in scripts)
    assert not any('plot.ly' in s or 'plotly' in s and s.startswith('http') for s in scripts)
    assert (site_executed / '_static' / 'plotly.min.js').stat().st_size > 1_000_000
    # the API index links resolve to anchors that exist on the pages
    api = (site_executed / 'api.html').read_text()
    for page, anchor in re.findall(r'href="(core|pitch)\.html#([^"]+)"', api):
        assert f'id="{anchor}"' in (site_executed / f'{page}.html').read_text(), f'{page}.html#{anchor}'


def test_a_fresh_report_lends_its_outputs_and_is_not_executed_again(tmp_path):
    "After `kelly report pitch`, the pitch page takes the report's outputs (its figure included) instead of running."
    import os
    from conftest import kelly_cli
    from kelly.docs import build_docs
    reports = tmp_path / 'reports'
    assert kelly_cli('report', 'pitch', '--quick', env={'KELLY_REPORTS': str(reports)}).returncode == 0
    said, old = [], os.environ.get('KELLY_REPORTS')
    os.environ['KELLY_REPORTS'] = str(reports)
    try:
        nbs = ROOT / 'nbs'
        site = build_docs(out=tmp_path / '_docs', execute=True, notebooks=[nbs / 'index.ipynb', nbs / '05_pitch.ipynb'],
                          say=said.append)
    finally:
        if old is None:
            del os.environ['KELLY_REPORTS']
        else:
            os.environ['KELLY_REPORTS'] = old
    assert any('pitch: outputs of its fresh report' in line for line in said), said
    assert not any('Executing notebook' in line and 'pitch' in line for line in said), said
    page = (site / 'pitch.html').read_text()
    assert 'Plotly.newPlot' in page and 'id="midi-to-hz"' in page and 'class="kelly-results"' in page
