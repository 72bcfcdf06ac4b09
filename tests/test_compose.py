"kelly.music.compose: the learned emotion-to-music mapper, compose and its CLI entry, and the measures of the music."
import json, subprocess, sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import kelly_cli, seeded_idaw_models
from kelly.core import InputError, MissingResourceError
from kelly.music import compose as C
from kelly.music import idaw
from kelly.music.emotion import MOOD_VAD
from kelly.music.idaw import MODELS

pytestmark = pytest.mark.usefixtures('torch_one_thread')


@pytest.fixture(scope='module')
def mapper():
    "A mapper trained on the bundled tracks and the cue rows (a few hundred steps: seconds)."
    return C.train_mapper(C.mapper_rows(), steps=300)


@pytest.fixture(scope='module')
def mapper_dir(mapper, tmp_path_factory):
    return C.save_mapper(mapper, tmp_path_factory.mktemp('mapper') / 'mapper')


# --- the mapper (issue 20, point 2)

def test_training_pairs_are_never_kellys_own_rules():
    rows = C.mapper_rows()
    assert set(rows.source) == {'track', 'psychology'}  # the bundled tracks and the cited cue directions only
    tracks = rows[rows.source == 'track']
    assert len(tracks) == 28 and tracks.tempo.notna().all() and tracks.major.isin([0.0, 1.0]).all()
    energetic = tracks[tracks.word == 'energetic']
    assert (energetic.major == 0).all() and energetic.tempo.min() >= 130  # what the tracks list, not a valence rule


def test_mapper_learns_the_documented_directions(mapper):
    happy, sad = (C.emotion_parameters(MOOD_VAD.loc[w], mapper) for w in ('happy', 'sad'))
    assert happy['major'] and not sad['major']
    assert happy['tempo'] > sad['tempo'] + 20 and happy['register'] > sad['register']
    assert happy['velocity'] > sad['velocity']


def test_mapper_beats_the_hand_rule_on_held_out_moods():
    cv = C.mapper_crossval(C.mapper_rows(), steps=150)
    assert cv.loc['hand rules', 'mode_accuracy'] == pytest.approx(17 / 28)  # it calls every bundled track major
    assert cv.loc['mapper', 'mode_accuracy'] > cv.loc['hand rules', 'mode_accuracy']


def test_user_adaptation_on_a_held_out_simulated_user(mapper):
    table = C.user_adaptation(mapper, n_rated=6, steps=100)
    assert np.allclose(table.before, np.abs(list(C.USER_SHIFT.values())), atol=1e-4)
    assert (table.after < 0.5 * table.before).all()
    with torch.no_grad():  # the shared mapping is untouched: adaptation works on a copy
        assert torch.count_nonzero(mapper.user_embeddings.weight) == 0


def test_resolve_mapper_order(tmp_path, places, mapper, mapper_dir):
    assert C.mapper_places() == dict(report=tmp_path / 'reports' / 'artifacts' / 'compose' / 'mapper',
                                     cache=tmp_path / 'cache' / 'compose' / 'mapper')
    got, where = C.resolve_mapper(mapper_dir)
    assert where == dict(folder=str(mapper_dir), source='mapper')
    C.save_mapper(mapper, C.mapper_places()['cache'])
    assert C.resolve_mapper()[1]['source'] == 'cache'
    C.save_mapper(mapper, C.mapper_places()['report'])
    assert C.resolve_mapper()[1]['source'] == 'report'
    with pytest.raises(InputError, match='save_mapper'):
        C.resolve_mapper(tmp_path / 'mapperr')


# --- compose (issue 20, point 3)

def test_compose_writes_a_shaped_piece(tmp_path, mapper):
    import pretty_midi
    out = tmp_path / 'song.mid'
    piece, info = C.compose('sad', bars=8, seed=3, models=seeded_idaw_models(0), mapper=mapper, out=out)
    pm = pretty_midi.PrettyMIDI(str(out))
    assert len([n for i in pm.instruments for n in i.notes]) == len(piece) > 30
    key = pm.key_signature_changes[0].key_number
    assert not info['major'] and key == 12 + info['tonic']  # a minor key signature on the piece's tonic
    assert (pm.time_signature_changes[0].numerator, pm.time_signature_changes[0].denominator) == (4, 4)
    melody = piece[piece.instrument == 'melody']
    assert melody.pitch.iloc[-1] % 12 == info['tonic']  # the melody ends on the tonic
    bass = piece[piece.instrument == 'bass'].sort_values('start')
    assert [p % 12 for p in bass.pitch.iloc[-2:]] == [(info['tonic'] + 7) % 12, info['tonic']]  # V - i
    assert 0.4 <= info['harmonic_rhythm'] <= 1.0 and melody.velocity.nunique() > 3


def test_networks_in_key_mass_is_the_networks_not_the_mask(mapper):
    "Every note is in the key (the mask); `network_in_key` measures the MelodyTransformer before the mask."
    nets = seeded_idaw_models(0)
    _, plain = C.compose('happy', bars=2, seed=0, tonic=0, models=nets, mapper=mapper)
    assert plain['in_key'] == 1.0 and abs(plain['network_in_key'] - plain['key_chance']) < 0.1  # untrained: chance
    biased = seeded_idaw_models(0)
    with torch.no_grad():
        biased['MelodyTransformer'].fc3.bias[:] = -20.0
        black_keys = torch.tensor([61, 63, 66, 68, 70])  # out of C major
        biased['MelodyTransformer'].fc3.bias[black_keys] = 20.0
    _, off = C.compose('happy', bars=2, seed=0, tonic=0, models=biased, mapper=mapper)
    assert off['in_key'] == 1.0 and off['network_in_key'] < 0.05  # the mask hides it; the measure does not


def test_emotions_sound_different(mapper):
    nets = seeded_idaw_models(0)
    rows = [dict(emotion=e, **C.compose(e, bars=4, seed=s, models=nets, mapper=mapper)[1])
            for e in ('happy', 'sad', 'angry', 'calm') for s in range(3)]
    got = C.distinctness(pd.DataFrame(rows))
    assert got['accuracy'] > 2 * got['chance']


def test_compose_mood_words_and_text(mapper):
    nets = seeded_idaw_models(0)
    _, calm = C.compose('calm', bars=1, seed=0, models=nets, mapper=mapper)
    _, txt = C.compose(text='I am so sad and lonely', bars=1, seed=0, models=nets, mapper=mapper)
    assert calm['arousal'] < 0 < calm['valence'] and txt['valence'] < 0 and not txt['major']


def test_untrained_only_when_asked_and_with_a_warning(places, mapper):
    with pytest.raises(MissingResourceError, match='allow-untrained'):
        C.compose('happy', bars=1, mapper=mapper)
    with pytest.warns(UserWarning, match='untrained'):
        _, info = C.compose('happy', bars=1, allow_untrained=True, mapper=mapper)
    assert info['bars'] == 1


# --- measures

def test_measures_against_hand_made_tunes():
    tune = dict(tonic=0, mode='major', bars=[[60, 62, 64, 65], [60, 62, 64, 65], [67, 69, 71, 72]], chords=[0, 0, 5, 5])
    assert C.repetition_share([tune]) == 1.0 and C.harmonic_rhythm([tune]) == pytest.approx(1 / 3)
    assert C.in_key_share([tune]) == 1.0 and C.in_key_share([dict(tune, tonic=1)]) < 0.5
    assert C.kl_divergence(C.interval_profile([tune]), C.interval_profile([tune])) == pytest.approx(0.0)
    noise = C.uniform_in_key([tune] * 20, seed=0)
    assert C.repetition_share(noise) < 0.2


def test_folk_tunes_are_read_and_counted():
    tunes, skipped = C.folk_melodies(3)
    assert len(tunes) == 3 and list(skipped.columns) == ['score', 'reason']
    assert all(t['source'] == 'Essen folk songs' and len(t['bars']) > 2 for t in tunes)


# --- the command line (moved from test_idaw)

def test_compose_main_help_and_run(tmp_path, places, capsys, mapper_dir):
    r = subprocess.run([sys.executable, '-c', 'from kelly.music.compose import compose_main; compose_main(["--help"])'],
                       capture_output=True, text=True)
    assert r.returncode == 0 and '--emotion' in r.stdout and '--mapper' in r.stdout
    out = tmp_path / 'x.mid'
    args = ['--emotion', 'happy', '--bars', '1', '--allow-untrained', '--mapper', str(mapper_dir), '--out', str(out)]
    assert C.compose_main(args) == 0
    captured = capsys.readouterr()
    assert 'kelly compose: warning: untrained' in captured.err  # the library's warning, as one line
    assert json.loads(captured.out)['mapper'] == 'mapper' and out.stat().st_size > 0
    with pytest.raises(SystemExit):
        C.compose_main(['--emotion', 'happy', '--valence', '0.3', '--out', str(out)])  # mutually exclusive


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
    with pytest.raises(InputError, match='GroovePredictor'):
        C.compose_main(['--emotion', 'calm', '--weights', str(d), '--out', str(tmp_path / 'x.mid')])
    assert not (tmp_path / 'x.mid').exists()


def test_compose_cli_weights_and_mapper(tmp_path, mapper_dir):
    env = {'KELLY_REPORTS': str(tmp_path / 'reports'), 'KELLY_CACHE': str(tmp_path / 'cache')}
    out = tmp_path / 'song.mid'
    base = ['--emotion', 'calm', '--bars', '1', '--mapper', str(mapper_dir), '--out', str(out)]
    r = kelly_cli('compose', *base, env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and 'kelly report idaw' in lines[0] and '--allow-untrained' in lines[0]
    assert not out.exists()
    published = idaw.save_models(seeded_idaw_models(3), tmp_path / 'reports' / 'artifacts' / 'idaw' / 'weights')
    r = kelly_cli('compose', *base, env=env)
    summary = json.loads(r.stdout)
    assert r.returncode == 0 and summary['weights'] == str(published), r.stderr
    assert summary['weights_source'] == 'report'
    assert summary['mapper_folder'] == str(mapper_dir) and 'untrained' not in r.stderr
