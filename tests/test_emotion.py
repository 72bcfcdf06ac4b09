"""kelly.music.emotion: one vocabulary from published norms, its conversions, negation-aware text emotion,
the audio network and loaders, the CLI."""
import json, subprocess, sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kelly.core import InputError
from kelly.data import EMOTIONS
from kelly.music import emotion as E


def test_vocabulary_is_the_specs_and_from_the_norms():
    assert list(E.VAD.index) == list(EMOTIONS) and list(E.VAD.columns) == ['valence', 'arousal', 'dominance']
    # Warriner et al. (2013) rate "happy" 8.47 / 6.05 / 7.21 on 1-9 scales; kelly maps x -> (x - 5) / 4
    assert np.allclose(E.VAD.loc['happy'], [(8.47 - 5) / 4, (6.05 - 5) / 4, (7.21 - 5) / 4])
    assert (E.MOOD_VAD.abs() <= 1).all().all()


def test_norms_agree_with_vaders_independent_human_ratings():
    from scipy.stats import spearmanr
    vl = E.vader_lexicon()
    shared = [w for w in E.MOOD_VAD.index if w in vl.index]
    assert len(shared) >= 20
    assert spearmanr(E.MOOD_VAD.loc[shared, 'valence'], vl.loc[shared, 'mean']).statistic > 0.8


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=8, max_size=8).filter(lambda p: sum(p) > 1e-3),
       st.floats(0.05, 1.0))
def test_conversions_stay_in_range_and_normalised(p, tau):
    vad = E.probs_to_vad(p)
    assert vad.shape == (3,) and (np.abs(vad) <= 1).all()
    q = E.vad_to_probs(vad, temperature=tau)
    assert np.isclose(q.sum(), 1) and (q >= 0).all()


def test_prototypes_round_trip_and_bad_values_refused():
    assert (E.vad_to_probs(E.VAD.to_numpy()).argmax(1) == np.arange(8)).all()
    assert np.allclose(E.probs_to_vad(np.eye(8)), E.VAD.to_numpy())
    with pytest.raises(InputError, match='between -1 and 1'):
        E.vad_to_probs([0, 1.5, 0])
    with pytest.raises(InputError, match='unknown mood word'):
        E.mood_vad('blorp')
    assert E.emotion_code('nostalgic').shape == (40,)


def test_negation_scope():
    assert E.text_tokens("I'm not angry, but sad") == [("i'm", False), ('angry', True), ('sad', False)]
    assert [n for _, n in E.text_tokens('never ever so very happy')] == [True, True, True, False]


def test_the_three_old_failures():
    r = E.emotion_from_text(['a crusade', 'I am unhappy', 'not angry'])
    top = r[list(EMOTIONS)].idxmax(axis=1)
    assert top['a crusade'] != 'sad' and top['I am unhappy'] != 'happy' and top['not angry'] != 'angry'
    assert r.loc['I am unhappy', 'valence'] < 0 and np.allclose(r[list(EMOTIONS)].sum(axis=1), 1)


def test_text_refuses_empty():
    with pytest.raises(InputError, match='texts'):
        E.emotion_from_text([' '])


def test_network_shapes_and_learning_signal():
    import torch
    torch.manual_seed(0)
    net = E.MultiScaleEmotionNet()
    x = np.random.default_rng(0).standard_normal((2, 24000)).astype(np.float32) * 0.1
    mels = [torch.as_tensor(m) for m in E.multiscale_logmel(x)]
    out = net(*mels)
    assert out.shape == (2, 11) and (out[:, 8:].abs() <= 1).all()
    tgt = torch.tensor(np.r_[E.vad_to_probs(E.mood_vad('calm')), E.mood_vad('calm')],
                       dtype=torch.float32)[None].repeat(2, 1)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    first = float(E.emotion_loss(net(*mels), tgt).detach())
    for _ in range(30):
        opt.zero_grad()
        loss = E.emotion_loss(net(*mels), tgt)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first


def test_mood_tracks_split_keeps_prompts_together():
    mt = E.mood_tracks()
    assert len(mt) == 28 and set(mt.mood) == set(E.MOODS)
    assert mt.groupby('prompt')['style'].nunique().max() == 1


def test_deam_and_emopia_standins(tmp_path):
    import soundfile as sf
    deam = tmp_path / 'deam'
    (deam / 'MEMD_audio').mkdir(parents=True)
    for i in (2, 5):
        sf.write(deam / 'MEMD_audio' / f'{i}.wav', np.zeros(2400, np.float32), 24000)
    (deam / 'static_annotations_averaged_songs_1_2000.csv').write_text(
        'song_id, valence_mean, valence_std, arousal_mean, arousal_std\n2, 3.0, 1.1, 7.0, 1.2\n5, 9.0, 0.5, 1.0, 0.4\n')
    d = E.load_deam(deam)
    assert d.song_id.tolist() == ['2', '5'] and np.allclose(d.valence,
                                                            [-0.5, 1.0]) and np.allclose(d.arousal, [0.5, -1.0])
    emo = tmp_path / 'emopia'
    emo.mkdir()
    for n in ('Q2_1a_0.wav', 'Q4_zz_3.wav'):
        sf.write(emo / n, np.zeros(2400, np.float32), 24000)
    e = E.load_emopia(emo)
    assert e.quadrant.tolist() == ['Q2', 'Q4'] and e.valence.tolist() == [-1, 1] and e.arousal.tolist() == [1, -1]
    with pytest.raises(InputError, match='no such folder'):
        E.load_emopia(tmp_path / 'none')


def test_emotion_main_text_json_and_bad_input(capsys):
    assert E.emotion_main(['not angry', 'a crusade', '--json']) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [r['input'] for r in recs] == ['not angry', 'a crusade'] and all(r['kind'] == 'text' for r in recs)
    with pytest.raises(InputError, match='no such audio file'):
        E.emotion_main(['missing.wav'])


def test_emotion_command_one_line_errors(tmp_path):
    code = 'import sys; from kelly.core import KellyError\nfrom kelly.music.emotion import emotion_main\n' \
           'try: sys.exit(emotion_main(sys.argv[1:]))\n' \
           'except KellyError as e: print(f"kelly: error: {e}", file=sys.stderr); sys.exit(2)'
    for args in ([str(tmp_path / 'x.flac')], [], ['--bogus', 'x']):
        r = subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and 'Traceback' not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_unknown_values_are_left_out_of_targets_and_loss():
    import torch
    given = E.vad_to_probs([0.5, -0.5, np.nan], missing=True)
    kernel = np.exp(-((E.VAD.to_numpy()[:, :2] - [0.5, -0.5]) ** 2).sum(1) / (2 * 0.25 ** 2))
    assert np.allclose(given, kernel / kernel.sum())
    with pytest.raises(InputError, match='give values between'):
        E.vad_to_probs([0.5, -0.5, np.nan])  # NaN only where asked for
    with pytest.raises(InputError, match='no value'):
        E.check_vad([np.nan] * 3, missing=True)
    out = torch.tensor([[0.0] * 8 + [0.2, 0.4, 0.9]])
    target = torch.tensor([[1 / 8] * 8 + [0.0, 0.0, float('nan')]])
    known = torch.tensor([[1 / 8] * 8 + [0.0, 0.0, 0.9]])  # the same target with dominance answered exactly
    assert torch.isfinite(E.emotion_loss(out, target))
    ce = -(target[:, :8] * torch.log_softmax(out[:, :8], -1)).sum()
    assert torch.isclose(E.emotion_loss(out, target), ce + (0.2 ** 2 + 0.4 ** 2) / 2)
    assert torch.isclose(E.emotion_loss(out, known), ce + (0.2 ** 2 + 0.4 ** 2) / 3)


def test_labelled_rows_are_checked_and_split_by_song():
    import pandas as pd
    with pytest.raises(InputError, match='path, valence and arousal'):
        E.check_labelled(pd.DataFrame(dict(path=['a.wav'], valence=[0.1])))
    with pytest.raises(InputError, match='between -1 and 1'):
        E.check_labelled(pd.DataFrame(dict(path=['a.wav'], valence=[3.0], arousal=[0.0])))
    with pytest.raises(InputError, match="valence='high'"):
        E.check_labelled(pd.DataFrame(dict(path=['a.wav'], valence=['high'], arousal=[0.0])))
    rows = pd.DataFrame(dict(path=[f'{i}.wav' for i in range(40)], song=[f's{i // 2}' for i in range(40)],
                             valence=np.tile([0.5, 0.5, -0.5, -0.5], 10), arousal=np.tile([0.5, 0.5, 0.5, 0.5], 10)))
    train, test = E.split_by_song(E.check_labelled(rows), 0.25, seed=3)
    assert not set(train.song) & set(test.song) and len(train) + len(test) == 40
    assert set(E.quadrant(test.valence, test.arousal)) == {'Q1', 'Q2'}
    with pytest.raises(InputError, match='songs'):
        E.split_by_song(rows.iloc[:4], 0.2)
    with pytest.raises(InputError, match='test_frac'):
        E.split_by_song(rows, 1.5)


def test_emopia_names_give_the_song(tmp_path):
    import soundfile as sf
    for n in ('Q1__8v0MFBZoco_0.mp3', 'Q1__8v0MFBZoco_1.wav', 'Q3_0vLPYiPN7qY_12.wav'):
        sf.write(tmp_path / (n.replace('.mp3', '.wav')), np.zeros(2400, np.float32), 24000)
    assert E.load_emopia(tmp_path).song.tolist() == ['_8v0MFBZoco', '_8v0MFBZoco', '0vLPYiPN7qY']


def test_audio_model_folder_round_trip(tmp_path):
    import torch
    torch.manual_seed(0)
    net = E.MultiScaleEmotionNet(width=8, hidden=16).eval()
    E.save_audio_model(net, tmp_path / 'm', dict(clips=3))
    back = E.load_audio_model(tmp_path / 'm')
    x = np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1
    assert np.allclose(E.predict_audio(net, [x]), E.predict_audio(back, [x]), atol=1e-6)
    assert json.loads((tmp_path / 'm' / 'audio_model.json').read_text())['about'] == dict(clips=3)
    with pytest.raises(InputError, match='no audio model there'):
        E.load_audio_model(tmp_path)
    (tmp_path / 'f').write_text('x')
    with pytest.raises(InputError, match='not a file'):
        E.save_audio_model(net, tmp_path / 'f')
