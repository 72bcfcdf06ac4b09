"kelly.music.idaw: the spec's sizes, streaming against whole-sequence inference, gradient checkpointing, compose and its CLI entry."
import json, subprocess, sys

import numpy as np
import pytest
import torch

from kelly.music import idaw
from kelly.music.idaw import MODELS, IDAWPipeline, compose, compose_main, emotion_code
from conftest import kelly_cli
from kelly.core import InputError, MissingResourceError

SPEC = dict(EmotionRecognizer=403_264, MelodyTransformer=641_664, HarmonyPredictor=74_176, DynamicsEngine=13_520, GroovePredictor=18_656)


@pytest.mark.parametrize('name', list(SPEC))
def test_parameter_count(name):
    assert sum(p.numel() for p in MODELS[name]().parameters()) == SPEC[name]


def test_total_and_shapes():
    assert sum(m().n_parameters() for m in MODELS.values()) == 1_151_280
    shapes = dict(EmotionRecognizer=(128, 64), MelodyTransformer=(64, 128), HarmonyPredictor=(128, 64), DynamicsEngine=(32, 16), GroovePredictor=(64, 32))
    for name, (i, o) in shapes.items():
        x = torch.randn(2, 3, i)
        assert MODELS[name]()(x).shape == (2, 3, o)


def test_streaming_matches_sequence():
    torch.manual_seed(0)
    mt = MODELS['MelodyTransformer']().eval()
    x = torch.randn(3, 7, 64)
    full, (h, c) = mt.sequence(x)
    s = (torch.zeros(3, 256), torch.zeros(3, 256))
    outs = []
    for t in range(7):
        y, s = mt.step(x[:, t], s)
        outs.append(y)
    assert torch.allclose(torch.stack(outs, 1), full, atol=1e-5)
    assert torch.allclose(s[1], c[0], atol=1e-5)


def test_pipeline_reset_and_state():
    torch.manual_seed(1)
    pipe = IDAWPipeline().reset(batch=2)
    codes = emotion_code(torch.rand(2, 5, 3) * 2 - 1)
    a = pipe.run(codes=codes)
    b = pipe.run(codes=codes)  # the state carries on: a second pass differs
    assert not torch.allclose(a['notes'], b['notes'])
    pipe.reset(batch=2)
    c = pipe.run(codes=codes)  # reset restores the first pass
    assert torch.equal(a['notes'], c['notes']) and torch.equal(a['chords'], c['chords'])
    assert torch.allclose(a['chords'].sum(-1), torch.ones(2, 5), atol=1e-5)
    assert ((a['expression'] >= 0) & (a['expression'] <= 1)).all() and (a['groove'].abs() <= 1).all()


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(2)
    x = torch.randn(4, 6, 128)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(3)
        m = MODELS['EmotionRecognizer']().gradient_checkpointing(ckpt).train()
        m(x).pow(2).sum().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for g0, g1 in zip(*grads):
        assert torch.allclose(g0, g1, atol=1e-6)


def test_compose_writes_playable_midi(tmp_path):
    import pretty_midi
    from kelly.music.theory import scale_pitch_classes
    models = {k: v().eval() for k, v in MODELS.items()}
    out = tmp_path / 'song.mid'
    piece, info = compose('sad', bars=2, seed=3, models=models, out=out)
    pm = pretty_midi.PrettyMIDI(str(out))
    notes = [n for i in pm.instruments for n in i.notes]
    assert len(notes) == len(piece) > 8 and pm.get_end_time() > 0
    tonic = int(np.argmax([info['key'].startswith(n + ' ') for n in ('C', 'C#', 'D', 'Eb', 'E', 'F', 'F#', 'G', 'Ab', 'A', 'Bb', 'B')]))
    scale = set(scale_pitch_classes(tonic, 'minor')) | {(tonic + 11) % 12}
    assert all(n.pitch % 12 in scale for n in notes)  # harmonic minor: melody and chords stay in the key
    assert not info['major']


def test_compose_main_help_and_run(tmp_path, places, capsys):
    r = subprocess.run([sys.executable, '-c', 'from kelly.music.idaw import compose_main; compose_main(["--help"])'], capture_output=True, text=True)
    assert r.returncode == 0 and '--emotion' in r.stdout and '--valence' in r.stdout
    out = tmp_path / 'x.mid'
    assert compose_main(['--emotion', 'happy', '--bars', '1', '--allow-untrained', '--out', str(out)]) == 0
    assert 'kelly compose: warning: untrained' in capsys.readouterr().err  # the library's warning, as one line
    assert out.stat().st_size > 0
    with pytest.raises(SystemExit):
        compose_main(['--emotion', 'happy', '--valence', '0.3', '--out', str(out)])  # mutually exclusive


def test_bench_tiny_records():
    recs = idaw.bench_idaw('tiny')
    cases = {(r['case'], r['metric']) for r in recs}
    assert ('pipeline batch=1 threads=1', 'latency_p50') in cases and ('pipeline batch=1 threads=1', 'latency_p99') in cases
    assert ('pipeline batch=256 threads=1', 'throughput') in cases
    assert all(np.isfinite(r['value']) and r['value'] > 0 for r in recs)


BAD_COMPOSE = [  # (arguments, the argument the one-line error must name)
    (['--emotion', 'happy', '--tonic', '12'], 'tonic'),
    (['--emotion', 'happy', '--tonic', '3.7'], 'tonic'),
    (['--emotion', 'happy', '--bars', '0'], 'bars'),
    (['--emotion', 'happy', '--seed', '-1'], 'seed'),
    (['--emotion', 'bored'], 'emotion'),
    (['--valence', '2'], 'valence'),
    (['--valence', 'nan'], 'valence'),
    (['--emotion', 'happy', '--weights', '/nonexistent'], 'weights'),
    (['--emotion', 'happy', '--out', '{dir}'], 'out'),
    (['--emotion', 'happy', '--out', '{dir}/a.wav'], 'out'),
    (['--emotion', 'happy', '--out', '{dir}/file.mid/x.mid'], 'out'),
]


@pytest.mark.parametrize('args, field', BAD_COMPOSE, ids=[' '.join(a) for a, _ in BAD_COMPOSE])
def test_compose_refuses_bad_input_in_one_line(tmp_path, args, field):
    (tmp_path / 'file.mid').write_bytes(b'not a folder')
    before = sorted(p.name for p in tmp_path.rglob('*'))
    args = [a.replace('{dir}', str(tmp_path)) for a in args]
    if '--out' not in args:
        args += ['--out', str(tmp_path / 'song.mid')]
    r = kelly_cli('compose', *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr
    assert field in lines[0] and 'Fix' in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.rglob('*')) == before  # nothing written


def test_compose_weights_must_be_complete(tmp_path):
    d = idaw.save_models({k: v() for k, v in MODELS.items()}, tmp_path / 'w')
    (d / 'GroovePredictor.safetensors').unlink()
    with pytest.raises(idaw.InputError, match='GroovePredictor'):
        compose_main(['--emotion', 'calm', '--weights', str(d), '--out', str(tmp_path / 'x.mid')])
    assert not (tmp_path / 'x.mid').exists()


def test_compose_mood_words_and_text(tmp_path):
    models = {k: v().eval() for k, v in MODELS.items()}
    _, calm = compose('calm', bars=1, seed=0, models=models)
    _, txt = compose(text='I am so sad and lonely', bars=1, seed=0, models=models)
    assert calm['arousal'] < 0 < calm['valence'] and txt['valence'] < 0 and not txt['major']


# --- trained by default: one place resolves the weights (issue 20, point 1)

@pytest.fixture
def places(tmp_path, monkeypatch):
    "Empty stand-ins for the published reports and the user cache; returns `weight_places()`."
    monkeypatch.setenv('KELLY_REPORTS', str(tmp_path / 'reports'))
    monkeypatch.setenv('KELLY_CACHE', str(tmp_path / 'cache'))
    return idaw.weight_places()


def _seeded(seed):
    torch.manual_seed(seed)
    return {k: v().eval() for k, v in MODELS.items()}


def _same(a, b): return all(torch.equal(x, y) for x, y in zip(a['MelodyTransformer'].state_dict().values(), b['MelodyTransformer'].state_dict().values()))


def test_resolve_weights_order(tmp_path, places):
    assert places['report'] == tmp_path / 'reports' / 'artifacts' / 'idaw' / 'weights' and places['cache'] == tmp_path / 'cache' / 'idaw' / 'weights'
    nets = {s: _seeded(s) for s in (11, 12, 13)}
    with pytest.raises(MissingResourceError, match='kelly report idaw'):
        idaw.resolve_weights()
    idaw.save_models(nets[11], places['cache'])
    got, where = idaw.resolve_weights()
    assert where == dict(folder=str(places['cache']), source='cache', untrained=[]) and _same(got, nets[11])
    idaw.save_models(nets[12], places['report'])
    got, where = idaw.resolve_weights()
    assert where['source'] == 'report' and _same(got, nets[12]) and not _same(got, nets[11])
    mine = idaw.save_models(nets[13], tmp_path / 'mine')
    got, where = idaw.resolve_weights(mine)
    assert where == dict(folder=str(mine), source='weights', untrained=[]) and _same(got, nets[13])
    (places['report'] / 'GroovePredictor.safetensors').unlink()  # an incomplete default place is passed over
    assert idaw.resolve_weights()[1]['source'] == 'cache'


def test_resolve_weights_refuses_misspelled_or_incomplete_folder(tmp_path, places):
    d = idaw.save_models(_seeded(1), tmp_path / 'weights')
    with pytest.raises(InputError, match='wieghts'):
        idaw.resolve_weights(tmp_path / 'wieghts')
    with pytest.raises(InputError, match='wieghts'):
        idaw.load_models(tmp_path / 'wieghts')
    (d / 'GroovePredictor.safetensors').unlink()
    (d / 'DynamicsEngine.safetensors').unlink()
    with pytest.raises(InputError, match=r'lacks DynamicsEngine\.safetensors, GroovePredictor\.safetensors'):
        idaw.resolve_weights(d)


def test_untrained_only_when_asked_and_with_a_warning(places):
    with pytest.raises(MissingResourceError, match='allow-untrained'):
        compose('happy', bars=1)
    with pytest.warns(UserWarning, match='untrained'):
        models, where = idaw.resolve_weights(allow_untrained=True)
    assert where == dict(folder=None, source='untrained', untrained=list(MODELS)) and _same(models, idaw.untrained_models())
    with pytest.warns(UserWarning, match='untrained'):
        _, info = compose('happy', bars=1, allow_untrained=True)
    assert info['bars'] == 1


def test_never_reads_the_shared_tmp_artifacts(tmp_path, places, monkeypatch):
    import tempfile
    from kelly.core import artifacts_dir
    from kelly.music.rtneural import idaw_weights
    monkeypatch.delenv('KELLY_ARTIFACTS', raising=False)
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))  # /tmp/kelly-artifacts becomes tmp_path/kelly-artifacts
    shared = idaw.save_models(_seeded(2), artifacts_dir('idaw') / 'weights')
    assert shared == tmp_path / 'kelly-artifacts' / 'idaw' / 'weights' and not idaw.missing_weights(shared)
    with pytest.raises(MissingResourceError):
        idaw.resolve_weights()
    with pytest.raises(MissingResourceError):
        idaw_weights()
    monkeypatch.setenv('KELLY_ARTIFACTS', str(tmp_path / 'kelly-artifacts'))  # nor an unpublished artifacts folder
    with pytest.raises(MissingResourceError):
        idaw.resolve_weights()


def test_compose_cli_weights(tmp_path):
    env = {'KELLY_REPORTS': str(tmp_path / 'reports'), 'KELLY_CACHE': str(tmp_path / 'cache')}
    out = tmp_path / 'song.mid'
    r = kelly_cli('compose', '--emotion', 'calm', '--bars', '1', '--out', str(out), env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and 'kelly report idaw' in lines[0] and '--allow-untrained' in lines[0], r.stderr
    assert not out.exists()
    r = kelly_cli('compose', '--emotion', 'calm', '--bars', '1', '--allow-untrained', '--out', str(out), env=env)
    assert r.returncode == 0 and 'warning: untrained' in r.stderr and json.loads(r.stdout)['weights_source'] == 'untrained', r.stderr
    published = idaw.save_models(_seeded(3), tmp_path / 'reports' / 'artifacts' / 'idaw' / 'weights')
    r = kelly_cli('compose', '--emotion', 'calm', '--bars', '1', '--out', str(out), env=env)
    summary = json.loads(r.stdout)
    assert r.returncode == 0 and summary['weights'] == str(published) and summary['weights_source'] == 'report', r.stderr
    assert str(published) in r.stderr and 'untrained' not in r.stderr
