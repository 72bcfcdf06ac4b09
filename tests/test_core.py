"atomic_write under a simulated crash: the target holds either the old or the new contents, never a torn file."
import os, subprocess, sys, textwrap

import pytest

from kelly.core import InputError, KellyError, atomic_write


def test_exception_mid_write_keeps_old_contents(tmp_path):
    p = tmp_path / 'table.csv'
    p.write_text('old')
    with pytest.raises(ZeroDivisionError):
        with atomic_write(p) as f:
            f.write('new, half written')
            1 / 0
    assert p.read_text() == 'old'
    assert [q.name for q in tmp_path.iterdir()] == ['table.csv']


@pytest.mark.parametrize('how', ['exit', 'sigkill'])
def test_process_killed_mid_write_keeps_old_contents(tmp_path, how):
    "A process that dies inside the block (no cleanup runs at all) leaves the old file whole."
    p = tmp_path / 'model.json'
    p.write_text('{"version": 1}')
    die = 'os._exit(1)' if how == 'exit' else 'os.kill(os.getpid(), signal.SIGKILL)'
    code = textwrap.dedent(f'''
        import os, signal
        from kelly.core import atomic_write
        with atomic_write({str(p)!r}) as f:
            f.write('{{"version": 2, "weights": [' + '0.5, ' * 100000)
            f.flush(); os.fsync(f.fileno())
            {die}
    ''')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True)
    assert res.returncode != 0
    assert p.read_text() == '{"version": 1}'


def test_new_file_permissions_follow_umask(tmp_path):
    p = tmp_path / 'new.txt'
    with atomic_write(p) as f:
        f.write('x')
    m = os.umask(0)
    os.umask(m)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~m)


def test_error_names_field_value_and_fix():
    e = InputError('songs.tempo', -3, 'give a tempo in BPM above 0', 'out of range')
    assert isinstance(e, KellyError) and isinstance(e, ValueError)
    assert all(s in str(e) for s in ('songs.tempo', '-3', 'give a tempo in BPM above 0', 'out of range'))
