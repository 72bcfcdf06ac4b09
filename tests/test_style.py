"House style that ruff cannot check on generated code: line length in kelly/, apart from what nbdev writes."
import ast
from pathlib import Path

import kelly

PACKAGE = Path(kelly.__file__).parent
MAX_LINE = 120

def _generated_lines(source:str) -> set:
    "Line numbers nbdev writes itself: the module docstring and the `__all__` assignment."
    tree = ast.parse(source)
    lines = set()
    for node in tree.body:
        is_doc = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and node is tree.body[0]
        is_all = isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == '__all__' for t in node.targets)
        if is_doc or is_all:
            lines |= set(range(node.lineno, node.end_lineno + 1))
    return lines

def test_generated_lines_are_found():
    source = '"""A summary."""\n__all__ = [\'a\',\n           \'b\']\nx = 1\n'
    assert _generated_lines(source) == {1, 2, 3}

def test_lines_of_kelly_fit_in_120_characters():
    too_long = []
    for path in sorted(PACKAGE.rglob('*.py')):
        if path.name == '_modidx.py':
            continue
        source = path.read_text(encoding='utf-8')
        skip = _generated_lines(source)
        for number, line in enumerate(source.splitlines(), 1):
            if number not in skip and len(line) > MAX_LINE:
                too_long.append(f'{path.relative_to(PACKAGE)}:{number} ({len(line)})')
    assert not too_long, f'{len(too_long)} lines over {MAX_LINE} characters (fix them in the notebooks): {too_long[:9]}'
