"Every command has help; the bench runner prints the records DESIGN.md defines."
import json, os, re, subprocess, sys
from pathlib import Path

import pytest

from conftest import BIN, kelly_cli


@pytest.mark.parametrize('cmd', [[], ['report'], ['bench'], ['docs'], ['info'], ['compose']])
def test_help(cmd):
    res = kelly_cli(*cmd, '--help')
    assert res.returncode == 0 and res.stdout.startswith('usage: kelly')


def test_no_command_is_a_usage_error():
    res = kelly_cli()
    assert res.returncode == 2 and 'COMMAND' in res.stderr and 'kelly --help' in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_the_project_is_the_one_you_stand_in(demo_project, tmp_path):
    "A second project, run from its own folder (no KELLY_PROJECT), uses its own reports, never the checkout's."
    env = {k: v for k, v in os.environ.items() if k not in ('KELLY_PROJECT', 'KELLY_REPORTS')}
    sub = demo_project / 'nbs'
    listed = subprocess.run([str(BIN / 'kelly'), 'report', '--list'], cwd=sub, env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and listed.stdout.split()[0] == 'demo', listed.stdout
    info = subprocess.run([str(BIN / 'kelly'), 'info'], cwd=sub, env=env, capture_output=True, text=True)
    assert json.loads(info.stdout)['reports'] == str((demo_project / 'reports').resolve())
    ran = subprocess.run([str(BIN / 'kelly'), 'report', 'demo'], cwd=demo_project, env={**env, 'KELLY_PROGRESS': '0'},
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert f'reports go to {(demo_project / "reports").resolve()}' in ran.stderr
    assert (demo_project / 'reports' / 'demo.html').is_file()


def test_bench_json_records():
    res = kelly_cli('bench', 'pitch', '--json', '--tiny')
    assert res.returncode == 0, res.stderr
    recs = json.loads(res.stdout)
    assert recs and all(set(r) == {'bench', 'case', 'metric', 'value', 'unit'} for r in recs)
    speedup = [r for r in recs if r['metric'] == 'speedup_vs_python']
    assert len(speedup) == 1 and speedup[0]['value'] > 0


def _benchmarks_run_by_module_tests() -> set:
    "Benchmarks another tests/ file runs at the tiny size, by function (`bench_x('tiny')`) or by name."
    from kelly.bench import discover
    here = Path(__file__)
    text = '\n'.join(p.read_text() for p in here.parent.glob('test_*.py') if p != here)
    return {name for name, fn in discover().items()
            if re.search(rf"\b{fn.__name__}\((size=)?'tiny'\)", text)
            or re.search(rf"run_benchmarks\('{name}', size='tiny'\)", text)}


def test_bench_all_tiny_runs_every_benchmark():
    "Every registered benchmark runs at its tiny size: here through `kelly bench` those no module test runs."
    from kelly.bench import discover
    covered = _benchmarks_run_by_module_tests()
    assert {'search', 'temporal', 'idaw', 'deep'} <= covered, covered  # the reading of tests/ finds their calls
    rest = sorted(set(discover()) - covered)
    assert rest and 'careers' in rest  # `run_benchmarks('temporal')` runs temporal only, not its module's other one
    for name in rest:
        res = kelly_cli('bench', name, '--json', '--tiny', timeout=600)
        assert res.returncode == 0, (name, res.stderr)
        assert {r['bench'] for r in json.loads(res.stdout)} == {name}


def test_unknown_bench_is_a_clear_error():
    res = kelly_cli('bench', 'nope')
    assert res.returncode == 2 and 'unknown benchmark' in res.stderr and 'pitch' in res.stderr


def test_info():
    res = kelly_cli('info')
    assert res.returncode == 0 and json.loads(res.stdout)['device'] == 'cpu'


def test_bench_json_stdout_holds_only_the_records(tmp_path):
    "A benchmark whose library writes to file descriptor 1 (FAISS's on-disk lists do) cannot corrupt the JSON."
    code = '\n'.join([
        'import os, sys',
        'from kelly.bench import benchmark',
        "@benchmark('fdprint')",
        "def bench_fdprint(size='full'):",
        "    os.write(1, b'noise from C\\n')",
        "    return [dict(case='x', metric='m', value=1.0, unit='u')]",
        'from kelly.cli import main',
        "sys.exit(main(['bench', 'fdprint', '--json']))"])
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [dict(bench='fdprint', case='x', metric='m', value=1.0, unit='u')]
    assert 'noise from C' in res.stderr
