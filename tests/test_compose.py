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


def test_mapper_against_the_hand_rule_on_held_out_moods():
    cv = C.mapper_crossval(C.mapper_rows(), steps=400)
    assert cv.loc['hand rules', 'mode_accuracy'] == pytest.approx(17 / 28)  # it calls every bundled track major
    assert cv.loc['mapper', 'tempo_mae'] < cv.loc['hand rules', 'tempo_mae'] < cv.loc['training mean / majority',
                                                                                     'tempo_mae']
    assert cv.loc['mapper', 'mode_accuracy'] >= cv.loc['hand rules', 'mode_accuracy']


def test_mapper_input_is_valence_and_arousal(mapper):
    assert mapper.emotion_dim == 2 and C.MAPPER_INPUTS == ('valence', 'arousal')
    a = C.emotion_parameters((0.5, 0.2, -0.9), mapper)  # dominance does not reach the mapper
    assert a == C.emotion_parameters((0.5, 0.2, 0.9), mapper)


def test_user_adaptation_on_a_held_out_simulated_user(mapper):
    table = C.user_adaptation(mapper, n_rated=6, steps=100)
    assert np.allclose(table.before, np.abs(list(C.USER_SHIFT.values())), atol=1e-4)
    assert (table.after < 0.5 * table.before).all()
    with torch.no_grad():  # the shared mapping is untouched: adaptation works on a copy
        assert torch.count_nonzero(mapper.user_embeddings.weight) == 0


def test_resolve_mapper_order(tmp_path, places, mapper, mapper_dir):
    assert C.mapper_places() == dict(report=tmp_path / 'reports' / 'artifacts' / 'compose' / 'mapper',
                                     cache=tmp_path / 'cache' / 'compose' / 'mapper_v2')
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


# --- the closed loop: rendering and the second listener (issue 20, point 3)

def _scale_piece(tonic, major, tempo=120.0):
    "A scale up and down (minor: harmonic) over the held tonic triad."
    steps = [0, 2, 4, 5, 7, 9, 11, 12] if major else [0, 2, 3, 5, 7, 8, 11, 12]
    beat = 60 / tempo
    tune = [dict(start=i * beat, end=(i + 0.9) * beat, pitch=60 + tonic + s, velocity=80, instrument='melody')
            for i, s in enumerate(steps + steps[::-1])]
    triad = [dict(start=0.0, end=len(tune) * beat, pitch=p + tonic, velocity=60, instrument='chords')
             for p in (48, 55, 52 if major else 51)]
    return pd.DataFrame(tune + triad)


def _needs_fluidsynth():
    if C.synthesizer('TimGM6mb') == C.SINES:
        pytest.skip('fluidsynth or a General MIDI soundfont is not installed (the sine fallback is tested apart)')


@pytest.mark.parametrize('synth', ['sines', 'TimGM6mb'])
def test_krumhansl_kessler_mode_of_rendered_scales(synth):
    if synth != 'sines':
        _needs_fluidsynth()
    for tonic, major in ((0, True), (0, False), (9, True), (9, False), (4, True)):
        got = C.key_of_audio(C.render_piece_audio(_scale_piece(tonic, major), 120, 22050, synth), 22050)
        assert (got['tonic'], got['major']) == (tonic, major), (synth, tonic, major, got)
        assert (got['majorness'] > 0) == major


def _click_track(bpm, seconds=20.0, sr=22050, onsets=(0, 1, 2, 3)):
    "A noise burst at each onset (in beats) of every 4-beat bar."
    x = np.zeros(int(sr * seconds), np.float32)
    burst = np.random.default_rng(0).standard_normal(200).astype(np.float32)
    for bar in np.arange(0.1, seconds - 240 / bpm, 240 / bpm):
        for onset in onsets:
            t = int((bar + onset * 60 / bpm) * sr)
            x[t:t + 200] = burst
    return x


@pytest.mark.parametrize('bpm', [72, 100, 150])
def test_listener_tempo_of_a_click_track(bpm):
    assert C.tempo_of_audio(_click_track(bpm), 22050, levels=(1,)) == pytest.approx(bpm, rel=0.02)
    assert C.tempo_right(C.tempo_of_audio(_click_track(bpm), 22050), bpm, octaves=True)  # beats alone: octave-blind


@pytest.mark.parametrize('bpm', [72, 96, 120])
def test_metrical_comb_hears_the_beat_of_a_dotted_rhythm(bpm):
    dotted = _click_track(bpm, onsets=(0, 1.5, 2, 3.5))
    assert C.tempo_of_audio(dotted, 22050) == pytest.approx(bpm, rel=0.02)
    assert not C.tempo_right(C.tempo_of_audio(dotted, 22050, levels=(1,)), bpm, tolerance=0.1)  # the plain peak


def test_tempo_of_silence_is_nan():
    assert np.isnan(C.tempo_of_audio(np.zeros(22050 * 4, np.float32), 22050))


def test_tempo_right_counts_octave_errors_only_when_asked():
    assert C.tempo_right([100, 200, 104.5], [100, 100, 100]).tolist() == [True, False, False]
    assert C.tempo_right([100, 200, 50, 300], [100, 100, 100, 100], octaves=True).all()


def test_render_falls_back_to_sines_without_fluidsynth(monkeypatch):
    monkeypatch.setattr(C, '_has_fluidsynth', lambda: False)
    assert C.synthesizer() == C.SINES and C.synthesizer('FluidR3_GM') == C.SINES
    x = C.render_piece_audio(_scale_piece(0, True), 120, 8000)
    assert x.dtype == np.float32 and np.abs(x).max() == pytest.approx(0.5, abs=1e-4)
    got = C.key_of_audio(C.render_piece_audio(_scale_piece(0, False), 120, 22050), 22050)
    assert (got['tonic'], got['major']) == (0, False)  # the listener works on the fallback too


def test_soundfont_names_are_checked():
    with pytest.raises(InputError, match='soundfont'):
        C.synthesizer('Steinway')
    with pytest.raises(InputError, match='soundfont'):
        C.synthesizer('/nonexistent/piano.sf2')
    assert C.synthesizer('sines') == C.SINES


def test_fluidsynth_renders_velocity_as_level():
    _needs_fluidsynth()
    piece = _scale_piece(0, True)
    soft, loud = (C.render_piece_audio(piece.assign(velocity=v), 120, 22050, 'TimGM6mb') for v in (40, 110))
    assert 20 * np.log10(loud.std() / soft.std()) > 6  # one fixed gain, not a per-piece normalisation


def test_cue_listener_combines_the_cues_by_quadrant():
    toy = pd.DataFrame(dict(tempo=[60, 160, 60, 160], majorness=[0.2, 0.2, -0.2, -0.2],
                            loudness_db=[-30, -20, -30, -20], register=[60, 70, 60, 70]))
    heard = C.cue_listener(toy)
    assert C.quadrant(heard.cue_valence, heard.cue_arousal).tolist() == ['Q4', 'Q1', 'Q3', 'Q2']
    assert (C.cue_listener(toy.assign(majorness=[0.1, 0.3, 0.2, 0.4])).cue_valence > 0).all()  # not centred


def test_agreement_statistics():
    labels = np.array(['Q1', 'Q2', 'Q3', 'Q4'] * 10)
    perfect = C.agreement(labels, labels, 500)
    assert perfect['accuracy'] == 1 and perfect['p_perm'] < 0.01 and perfect['ci_low'] > 0.9
    constant = C.agreement(labels, np.full(40, 'Q1'), 500)  # always one answer: right a quarter of the time, no credit
    assert constant['accuracy'] == 0.25 and constant['p_perm'] == 1.0
    assert C.rank_agreement([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], 200)['rho'] == pytest.approx(1.0)
    assert C.rank_agreement(range(8), range(8)[::-1], 200)['p_perm'] > 0.9


def test_closed_loop_table(mapper):
    from kelly.music.emotion import MultiScaleEmotionNet
    torch.manual_seed(0)
    nets = seeded_idaw_models(0)
    pieces = [C.compose(e, bars=2, seed=0, models=nets, mapper=mapper) for e in ('happy', 'sad', 'angry')]
    loop = C.closed_loop(pieces, soundfont='sines', model=MultiScaleEmotionNet().eval())
    assert list(loop.columns) == ['valence', 'arousal', 'tempo', 'major', 'model_valence', 'model_arousal',
                                  'heard_tempo', 'heard_tonic', 'heard_major', 'heard_majorness', 'heard_loudness_db',
                                  'heard_register', 'cue_valence', 'cue_arousal', 'relative_valence',
                                  'relative_arousal', 'intended', 'model_quadrant', 'relative_quadrant',
                                  'cue_quadrant']
    assert loop.intended.tolist() == ['Q1', 'Q3', 'Q2'] and len(loop) == 3
    assert loop.relative_arousal.to_numpy() == pytest.approx(loop.model_arousal - loop.model_arousal.mean())
    summary = C.loop_summary(loop, 50)
    assert list(summary.index) == list(C.LISTENERS.values())
    assert summary.quadrant_accuracy.between(0, 1).all() and (summary.commonest == 1 / 3).all()
    for axis in ('valence', 'arousal'):  # per axis: the sign's share heard as meant inside its interval, and rho
        assert (summary[f'{axis}_sign_low'] <= summary[f'{axis}_sign']).all()
        assert (summary[f'{axis}_sign'] <= summary[f'{axis}_sign_high']).all()
        assert summary[f'{axis}_heard_negative'].between(0, 1).all()


def test_per_axis_agreement_gives_no_credit_to_a_constant_answer():
    "A listener that always hears positive valence is right on the positive pieces, and the test gives it no credit."
    intended = np.array([0.8, 0.6, 0.4, -0.5, -0.7, 0.3, -0.2, 0.9] * 3)
    loop = pd.DataFrame(dict(valence=intended, arousal=-intended, intended=C.quadrant(intended, -intended)))
    for name in C.LISTENERS:
        loop[f'{name}_valence'] = 0.5 + 0.1 * intended  # positive always, but ranked as meant
        loop[f'{name}_arousal'] = -intended
        loop[f'{name}_quadrant'] = C.quadrant(loop[f'{name}_valence'], loop[f'{name}_arousal'])
    row = C.loop_summary(loop, 200).iloc[0]
    assert row.valence_sign == pytest.approx(15 / 24) and row.valence_sign_p == 1.0 and row.valence_heard_negative == 0
    assert row.valence_rho == pytest.approx(1.0) and row.valence_p < 0.01  # the ranks are heard
    assert row.arousal_sign == 1.0 and row.arousal_sign_p < 0.01
