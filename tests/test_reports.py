"The report runner, through the `kelly` command: publish on success, leave everything untouched on failure."
import json, os, re, signal, subprocess, time
from pathlib import Path

from conftest import BIN, kelly_cli


def _published(reports: Path) -> dict:
    return {p.relative_to(reports): p.read_bytes() for p in sorted(reports.rglob('*'))
            if p.is_file() and not p.name.startswith('index.') and '_failed' not in p.parts
            and not any(part.startswith('.run-') for part in p.relative_to(reports).parts)}


def test_success_publishes_notebook_html_artifacts_and_index(demo_project):
    res = kelly_cli('report', 'demo', project=demo_project)
    assert res.returncode == 0, res.stderr
    reports = demo_project / 'reports'
    assert {p.name for p in reports.iterdir()} == {'demo.ipynb', 'demo.html', 'artifacts', 'mathjax', 'plotly',
                                                   'index.json', 'index.html', '.lock'}
    assert (reports / 'artifacts' / 'demo' / 'y.txt').read_text() == '10'  # the manifest's x = 5, doubled
    index = json.loads((reports / 'index.json').read_text())
    rec = index['demo']['published']
    assert rec['status'] == 'ok' and rec['parameters'] == {'x': 5} and rec['duration_s'] > 0
    assert {'started', 'version', 'commit'} <= rec.keys()
    html = (reports / 'index.html').read_text()
    assert 'href="demo.html"' in html and 'x=5' in html
    assert 'demo' in res.stderr and 'ok in' in res.stderr


def test_override_reaches_the_notebook(demo_project):
    res = kelly_cli('report', 'demo', '-p', 'x', '21', '-p', 'label', 'full size', project=demo_project)
    assert res.returncode == 0, res.stderr
    assert (demo_project / 'reports' / 'artifacts' / 'demo' / 'y.txt').read_text() == '42'
    nb = json.loads((demo_project / 'reports' / 'demo.ipynb').read_text())
    injected = [c for c in nb['cells'] if 'injected-parameters' in c['metadata'].get('tags', [])]
    assert 'label = "full size"' in ''.join(injected[0]['source'])


def test_quick_uses_notebook_defaults(demo_project):
    assert kelly_cli('report', 'demo', '--quick', project=demo_project).returncode == 0
    assert (demo_project / 'reports' / 'artifacts' / 'demo' / 'y.txt').read_text() == '2'


def test_failure_leaves_previous_report_byte_identical(demo_project):
    reports = demo_project / 'reports'
    assert kelly_cli('report', 'demo', project=demo_project).returncode == 0
    before = _published(reports)
    res = kelly_cli('report', 'demo', '-p', 'x', '-1', project=demo_project)
    assert res.returncode == 1
    assert 'cell 3 of nbs/01_demo.ipynb' in res.stderr and 'x must not be negative' in res.stderr
    assert _published(reports) == before
    index = json.loads((reports / 'index.json').read_text())
    assert index['demo']['last']['status'] == 'failed' and index['demo']['published']['parameters'] == {'x': 5}
    assert (reports / '_failed' / 'demo.ipynb').exists()
    assert not [p for p in reports.iterdir() if p.name.startswith('.run-')], 'temporary run folder left behind'


def test_unknown_report_and_parameters_are_clear_errors(demo_project):
    res = kelly_cli('report', 'nope', project=demo_project)
    assert res.returncode == 2 and 'unknown report' in res.stderr and 'demo' in res.stderr
    res = kelly_cli('report', 'demo', '-p', 'typo', '1', project=demo_project)
    assert res.returncode == 2 and 'unknown parameter' in res.stderr and 'x, label' in res.stderr
    (demo_project / 'settings.ini').write_text('[demo]\nx = 5\nwrong = 1\n')
    res = kelly_cli('report', 'demo', project=demo_project)
    assert res.returncode == 2 and '[demo] wrong' in res.stderr
    assert not (demo_project / 'reports' / 'demo.ipynb').exists()


def test_report_all_goes_on_after_a_failure(demo_project):
    nbs = demo_project / 'nbs'
    demo_source = (nbs / '01_demo.ipynb').read_text()
    (nbs / '02_other.ipynb').write_text(demo_source.replace("artifacts_dir('demo')", "artifacts_dir('other')"))
    (demo_project / 'settings.ini').write_text('[demo]\nx = -1\n\n[other]\nx = 4\n')
    res = kelly_cli('report', 'all', project=demo_project)
    assert res.returncode == 1 and '1 failed (demo)' in res.stderr and 'demo: FAILED' in res.stderr
    assert (demo_project / 'reports' / 'artifacts' / 'other' / 'y.txt').read_text() == '8'


def test_report_html_renders_plotly_offline(root, tmp_path):
    "The real pitch report: its HTML loads plotly.js and MathJax from beside it, nothing from a CDN, and stays small."
    res = kelly_cli('report', 'pitch', '--quick', env={'KELLY_REPORTS': str(tmp_path)})
    assert res.returncode == 0, res.stderr
    html = (tmp_path / 'pitch.html').read_text()
    assert 'Plotly.newPlot' in html and 'require.min.js' not in html
    assert html.index('src="plotly/plotly.min.js"') < html.index('Plotly.newPlot')
    assert 'plotly.js v' in (tmp_path / 'plotly' / 'plotly.min.js').read_text()[:200]
    assert len(html.encode()) < 1_000_000 and '#| export' not in html and 'default_exp' not in html
    assert not re.findall(r'<script[^>]*src="https?://', html), 'a script from the network'
    assert 'src="mathjax/MathJax.js?config=' in html and (tmp_path / 'mathjax' / 'MathJax.js').exists()
    summary = json.loads((tmp_path / 'artifacts' / 'pitch' / 'summary.json').read_text())
    assert summary['a4'] == 440.0 and abs(summary['middle_c_hz'] - 261.6256) < 1e-4


def test_every_report_of_the_manifest_resolves(root):
    "kelly's settings.ini: each section's values are parameters of its notebook, of the right kind (checked first)."
    from kelly.reports import Manifest, notebook_parameters, resolve_parameters
    m = Manifest(root / 'settings.ini')
    assert len(m.names) >= 15
    for name in m.names:
        declared = notebook_parameters(m.notebook(name))
        assert set(resolve_parameters(m, name)) <= set(declared) and resolve_parameters(m, name, quick=True) == {}


def test_no_notebook_replaces_the_offline_plotly_renderer(root):
    "kelly.core's renderer keeps plotly.js out of the outputs; another one puts CDN scripts in reports."
    offenders = [str(p.relative_to(root)) for p in sorted((root / 'nbs').rglob('*.ipynb'))
                 if p.name != '00_core.ipynb' and re.search(r'renderers\.default\s*=', p.read_text())]
    assert offenders == []


def test_a_killed_run_leaves_the_report_and_its_folder_is_swept_by_the_next(demo_project):
    "SIGKILL mid-run (kernel included): the published report is untouched; the next run removes the dead run's folder."
    reports = demo_project / 'reports'
    assert kelly_cli('report', 'demo', project=demo_project).returncode == 0
    before = _published(reports)
    nb = demo_project / 'nbs' / '01_demo.ipynb'
    original = nb.read_text()
    nb.write_text(original.replace('y = 2 * x', 'import time; time.sleep(120); y = 2 * x'))
    env = {**os.environ, 'KELLY_PROGRESS': '0', 'KELLY_PROJECT': str(demo_project), 'KELLY_REPORTS': str(reports)}
    run = subprocess.Popen([str(BIN / 'kelly'), 'report', 'demo'], env=env, start_new_session=True, cwd=demo_project,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(reports.glob('.run-demo-*/pid')) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)   # into the sleeping cell
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert list(reports.glob('.run-demo-*')), 'the killed run left no folder: nothing to sweep'
    assert _published(reports) == before
    nb.write_text(original)
    assert kelly_cli('report', 'demo', project=demo_project).returncode == 0
    assert not list(reports.glob('.run-*'))


def test_second_run_redoes_only_what_changed_and_runs_in_parallel(demo_project):
    "`kelly report all` twice: the second runs nothing; a changed parameter re-runs that report only; -j 2 runs two."
    nbs = demo_project / 'nbs'
    demo_source = (nbs / '01_demo.ipynb').read_text()
    (nbs / '02_other.ipynb').write_text(demo_source.replace("artifacts_dir('demo')", "artifacts_dir('other')"))
    (demo_project / 'settings.ini').write_text('[demo]\nx = 5\n\n[other]\nx = 4\nafter = "demo"\n')
    first = kelly_cli('report', 'all', '-j', '2', project=demo_project)
    assert first.returncode == 0 and '2 ok' in first.stderr, first.stderr
    status = kelly_cli('report', 'all', '--status', project=demo_project)
    assert status.stdout.split() == ['demo', 'fresh', 'other', 'fresh'], status.stdout
    second = kelly_cli('report', 'all', project=demo_project)
    assert second.returncode == 0 and '2 fresh' in second.stderr, second.stderr
    (demo_project / 'settings.ini').write_text('[demo]\nx = 6\n\n[other]\nx = 4\nafter = "demo"\n')
    status = kelly_cli('report', 'all', '--status', project=demo_project)
    assert 'demo             stale  (parameters changed)' in status.stdout, status.stdout
    third = kelly_cli('report', 'all', project=demo_project)
    assert '2 ok' in third.stderr and 'runs after demo' in third.stderr, third.stderr   # other reads demo's artifacts
    index = json.loads((demo_project / 'reports' / 'index.json').read_text())
    assert index['demo']['published']['title'] == 'Demo' and index['demo']['published']['summary'] == 'A tiny report'


def test_sweep_runs_each_value_on_a_local_dask_cluster(demo_project):
    res = kelly_cli('report', 'demo', '--sweep', 'x=1,2,3', project=demo_project)
    assert res.returncode == 0 and '3 of 3 runs ok' in res.stderr, res.stderr
    sweep = demo_project / 'reports' / 'sweeps' / 'demo'
    summary = json.loads((sweep / 'summary.json').read_text())
    assert [v['params'] for v in summary['variants']] == [{'x': 1}, {'x': 2}, {'x': 3}]
    outputs = [(sweep / v['folder'] / 'artifacts' / 'demo' / 'y.txt').read_text() for v in summary['variants']]
    assert outputs == ['2', '4', '6']
    bad = kelly_cli('report', 'all', '--sweep', 'x=1,2', project=demo_project)
    assert bad.returncode == 2 and 'one report at a time' in bad.stderr
