"README.md is generated from nbs/index.ipynb and must stay in step with it."
from conftest import ROOT


def test_readme_matches_index():
    from kelly.docs import readme_text
    assert (ROOT / 'README.md').read_text() == readme_text(ROOT / 'nbs' / 'index.ipynb'), \
        'README.md is out of step with nbs/index.ipynb: run `make export` (or `kelly docs --readme`), commit README.md'


def test_readme_documents_the_commands():
    txt = (ROOT / 'README.md').read_text()
    for cmd in ('make test', 'make reports', 'make lab', 'make docs', 'kelly report pitch -p a4 432', 'import', 'nbs/'):
        assert cmd in txt, cmd


def test_the_notebooks_table_lists_every_notebook():
    "README's table of notebooks names exactly the notebooks that exist (the map stays true to the territory)."
    import re
    listed = set(re.findall(r'^\| `nbs/(\S+\.ipynb)` \|', (ROOT / 'README.md').read_text(), re.M))
    nbs = ROOT / 'nbs'
    present = {str(p.relative_to(nbs)) for p in nbs.rglob('*.ipynb')
               if p.name != 'index.ipynb' and not any(s.startswith(('_', '.')) for s in p.relative_to(nbs).parts)}
    assert listed == present, (sorted(present - listed), sorted(listed - present))
