"""The report index, a report and a docs page opened in headless Chromium with the network cut off: no console
errors, every plotly figure drawn, formulas typeset by MathJax, and no request that left the machine. Pages are served
from 127.0.0.1, as a reader's local web server would serve them: opened as file:// URLs, Chromium refuses MathJax's web
fonts (file pages have no origin), and MathJax falls back to the fonts of the system."""
import functools, http.server, shutil, threading
from contextlib import contextmanager

import pytest

from conftest import ROOT, kelly_cli

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage']


@pytest.fixture(scope='module')
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope='module')
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp('reports')
    res = kelly_cli('report', 'pitch', '--quick', env={'KELLY_REPORTS': str(out)})
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    from kelly.docs import build_docs
    nbs = ROOT / 'nbs'
    return build_docs(out=tmp_path_factory.mktemp('site') / '_docs', execute=True,
                      notebooks=[nbs / 'index.ipynb', nbs / '05_pitch.ipynb'], say=lambda line: None)


@contextmanager
def _served(folder):
    "An HTTP server on 127.0.0.1 for `folder`, on a free port, for as long as the block runs."
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()


def _open(browser, url):
    "Open a page with every request that is not to 127.0.0.1 refused; what the console said and what tried to leave."
    errors, outside = [], []
    context = browser.new_context()
    page = context.new_page()
    page.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
    page.on('pageerror', lambda e: errors.append(str(e)))
    def route(r):
        if r.request.url.startswith(('http://127.0.0.1:', 'data:', 'about:')):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()
    page.route('**/*', route)
    page.goto(url, wait_until='load')
    return page, errors, outside


def _drawn_and_typeset(page, html):
    figures = html.count('Plotly.newPlot')
    page.wait_for_function(f'document.querySelectorAll(".main-svg").length >= {max(1, figures)}', timeout=60_000)
    page.wait_for_function('window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0 && '
                           'document.querySelectorAll('
                           '".MathJax, .MathJax_Display, .MathJax_CHTML, .MathJax_SVG").length > 0',
                           timeout=60_000)
    return figures


def test_report_index_and_page_in_chromium(browser, reports):
    with _served(reports) as root:
        page, errors, outside = _open(browser, f'{root}/index.html')
        assert page.locator('a[href="pitch.html"]').count() >= 1
        assert 'validations passed' in page.content()
        page, errors2, outside2 = _open(browser, f'{root}/pitch.html')
        figures = _drawn_and_typeset(page, (reports / 'pitch.html').read_text())
        assert figures >= 1
        assert page.locator('.kelly-results').count() == 1 and page.locator('details.kelly-code').count() >= 1
    assert errors + errors2 == [] and outside + outside2 == []


def test_docs_page_in_chromium(browser, site):
    with _served(site) as root:
        page, errors, outside = _open(browser, f'{root}/pitch.html')
        _drawn_and_typeset(page, (site / 'pitch.html').read_text())
        nav = page.locator('nav').all_inner_texts()
    assert any('Foundation' in t for t in nav), nav
    assert errors == [] and outside == []
