"""Every `kelly` subcommand against a table of bad arguments: exit code 2, one line on stderr that names the argument,
the value and the fix, no traceback, and no file written or changed."""
import hashlib, os, subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings, strategies as st

from conftest import BIN, ROOT

CATALOG = ROOT / 'data' / 'catalog'


def _tones(folder: Path, n: int = 4, seconds: float = 6.0, sr: int = 22050) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    for k in range(n):
        sf.write(folder / f't{k:03d}.wav', (0.3 * np.sin(2 * np.pi * 220 * 2 ** (k / 12) * t)).astype(np.float32), sr)
    return folder


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    "A folder with tones, a built index, a corrupt model file, an ordinary file and a folder; every case runs in it."
    d = tmp_path_factory.mktemp('bad-args')
    _tones(d / 'music')
    env = {**os.environ, 'KELLY_PROGRESS': '0'}
    built = subprocess.run([str(BIN / 'kelly'), 'index', 'build', 'music', '--out', 'music.index'], cwd=d, env=env,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (d / 'corrupt.pt').write_bytes(b'\x80\x04not a model at all')
    (d / 'a_file.txt').write_text('keep me')
    (d / 'a_folder').mkdir()
    return d


def _snapshot(*folders: Path) -> dict:
    "Every file and folder below `folders`, with a hash of each file's bytes."
    seen = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob('*')):
            seen[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else 'dir'
    return seen


# (arguments, words the one line must contain: the argument and the value); paths are relative to `workdir`
CASES = [
    (['report', 'no-such-report'], ['no-such-report']),
    (['report', 'pitch', '-p', 'n_notes', '1e3'], ['n_notes', '1000.0']),
    (['report', 'pitch', '-p', 'no_such_parameter', '1'], ['no_such_parameter']),
    (['report', 'pitch', '-p', 'a4', "'loud'"], ['a4', 'loud']),
    (['report', 'pitch', '--bogus'], ['--bogus']),
    (['bench', 'no-such-bench'], ['no-such-bench']),
    (['docs', '--out', 'a_file.txt'], ['--out', 'a_file.txt']),
    (['docs', '--out', '.'], ['--out']),
    (['docs', '--out', '/proc/kelly-docs'], ['--out', '/proc/kelly-docs', 'cannot write']),
    (['index', 'build', 'music', '--out', 'new.index', '--set', 'nprobe=abc'], ['nprobe', 'abc']),
    (['index', 'build', 'music', '--out', 'new.index', '--kind', 'hnsw', '--set', 'M=0'], ['M', '0']),
    (['index', 'build', 'music', '--out', 'new.index', '--kind', 'flat', '--set', 'nprobe=abc', '--set', 'nlist=-5'],
     ['nprobe', 'abc']),
    (['index', 'build', 'music', '--out', 'new.index', '--set', 'nprobe'], ['nprobe']),
    (['index', 'build', 'no_such_folder', '--out', 'new.index'], ['no_such_folder']),
    (['index', 'build', 'music', '--out', 'new.index', '--kind', 'nope'], ['--kind', 'nope']),
    (['index', 'build', 'music'], ['--out']),
    (['index', 'build', 'music', '--out', 'new.index', '--kind', 'hnsw', '--set', 'M=1'], ['M', '1']),
    (['index', 'build', 'music', '--out', 'a_file.txt'], ['--out', 'a_file.txt']),
    (['index', 'info', 'no_such.index'], ['no_such.index']),
    (['index'], ['index']),
    (['recommend', 'music.index', 't000', '-k', '0'], ['-k', '0']),
    (['recommend', 'music.index', 't000', '-k', 'abc'], ['-k', 'abc']),
    (['recommend', 'no_such.index', 't000'], ['no_such.index']),
    (['recommend', 'music.index', 'no-such-track'], ['no-such-track']),
    (['compose', '--emotion', 'happy', '--tonic', '12', '--out', 'x.mid'], ['tonic', '12']),
    (['compose', '--emotion', 'happy', '--tonic', '3.7', '--out', 'x.mid'], ['tonic', '3.7']),
    (['compose', '--emotion', 'happy', '--out', 'a_folder'], ['out', 'a_folder']),
    (['compose', '--emotion', 'happy', '--out', 'a.wav'], ['out', 'a.wav']),
    (['compose', '--emotion', 'happy', '--weights', 'no_such_weights', '--out', 'x.mid'],
     ['weights', 'no_such_weights']),
    (['compose', '--emotion', 'no-such-emotion', '--out', 'x.mid'], ['emotion', 'no-such-emotion']),
    (['compose', '--emotion', 'happy', '--bars', '0', '--out', 'x.mid'], ['bars', '0']),
    (['export', '--format', 'onnx', '--out', 'a_file.txt'], ['--out', 'a_file.txt']),
    (['export', '--format', 'onnx', '--out', 'exported', '--frames', '0'], ['--frames', '0']),
    (['export', '--format', 'onnx', '--out', 'exported', '--weights', 'no_such_weights'],
     ['weights', 'no_such_weights']),
    (['export', '--format', 'nope', '--out', 'exported'], ['--format', 'nope']),
    (['predict-features', str(CATALOG), '--model', 'corrupt.pt', '--out', 'f.csv'], ['corrupt.pt']),
    (['predict-features', 'no_such_catalog', '--out', 'f.csv'], ['no_such_catalog']),
    (['train', 'deep'], ['--out']),
    (['train', 'shallow', '--out', 'x.safetensors'], ['shallow']),
    (['train', 'deep', '--out', 'x.safetensors', '--nproc', '0'], ['--nproc', '0']),
    (['train', 'deep', '--out', 'x.txt'], ['--out', 'x.txt']),
    (['train', 'deep', '--out', 'x.safetensors', '--d-model', '30'], ['--d-model', '30']),
    (['train', 'deep', '--out', 'x.safetensors', '--nnodes', '2'], ['--rdzv-endpoint']),
    (['train', '--epochs', '3'], ['model']),
    (['train', 'emotion', '--out', 'model'], ['--deam', '--emopia']),
    (['train', 'emotion', '--emopia', 'no_such_folder', '--out', 'model'], ['no_such_folder']),
    (['train', 'emotion', '--emopia', 'music', '--out', 'a_file.txt'], ['--out', 'a_file.txt']),
    (['train', 'emotion', '--emopia', 'music', '--out', 'model'], ['t000.wav', 'quadrant']),
    (['train', 'emotion', '--deam', 'music', '--out', 'model', '--epochs', '0'], ['--epochs', '0']),
    (['train', 'emotion', '--deam', 'music', '--out', 'model'], ['csv', 'song_id']),
    (['predict-features', str(CATALOG), '--out', 'f.txt'], ['--out', 'f.txt']),
    (['predict-features', str(CATALOG), '--out', 'f.csv', '--epochs', '0'], ['epochs', '0']),
    (['predict-features', str(CATALOG), '--out', 'a_folder'], ['--out', 'a_folder']),
    (['emotion'], ['TEXT']),
    (['emotion', 'missing.wav'], ['missing.wav']),
    (['emotion', 'calm', '--bogus'], ['--bogus']),
    (['emotion', 'music/t000.wav', '--audio-model', 'a_folder'], ['audio_model', 'a_folder']),
    (['catalog', 'check', 'no_such_folder'], ['no_such_folder']),
    (['catalog', 'check'], ['folder']),
    (['catalog', 'verify', '.'], ['verify']),
]


@pytest.mark.parametrize('argv,words', CASES, ids=[' '.join(a) for a, _ in CASES])
def test_bad_argument_is_one_clear_line_and_writes_nothing(workdir, tmp_path, argv, words):
    env = {**os.environ, 'KELLY_PROGRESS': '0', 'KELLY_REPORTS': str(tmp_path / 'reports'),
           'KELLY_ARTIFACTS': str(tmp_path / 'artifacts'), 'KELLY_CACHE': str(tmp_path / 'cache')}
    before = _snapshot(workdir, tmp_path)
    res = subprocess.run([str(BIN / 'kelly'), *argv], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert 'Traceback' not in res.stderr + res.stdout
    assert len(lines) == 1, res.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert 'Fix' in lines[0] or 'fix' in lines[0], lines[0]
    after = {k: v for k, v in _snapshot(workdir, tmp_path).items() if not k.startswith(str(tmp_path / 'cache'))}
    assert after == {k: v for k, v in before.items() if not k.startswith(str(tmp_path / 'cache'))}


def test_every_command_is_in_the_table():
    "A new subcommand needs its bad arguments here too."
    from kelly.cli import parser
    commands = set(parser()._subparsers._group_actions[0].choices) - {'info'}
    assert commands <= {argv[0] for argv, _ in CASES}, commands - {argv[0] for argv, _ in CASES}


@settings(max_examples=25, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True)
                   .filter(lambda v: v != int(v) if np.isfinite(v) else True),
                 st.text(alphabet='abcxyz', min_size=1, max_size=5)))
def test_report_refuses_every_value_of_the_wrong_kind(value):
    "`-p n_notes VALUE` with anything but a whole number is refused before any notebook runs, in one line."
    import contextlib, io
    from kelly.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(['report', 'pitch', '-p', 'n_notes', repr(value)])
        except SystemExit as stop:
            code = stop.code   # argparse: "-1e-08" looks like an option to it
    assert code == 2
    said = err.getvalue().strip().splitlines()
    assert len(said) == 1 and ('n_notes' in said[0] or '-p' in said[0]) and 'Fix' in said[0], said
