"""The package, its tests and benchmarks need no Python newer than ``setup.py``'s floor (vermin).

vermin reads the source without running it.  Its detector of ``X | Y`` union
types (3.10+) is what catches the classic break, a union built at import time
(``PathLike = str | os.PathLike``), but it also flags annotations, which are
never evaluated in a module with ``from __future__ import annotations``.  So
vermin runs on copies of the modules whose annotations are removed exactly
where that import makes them inert; everywhere else (modules without the
import, runtime expressions) every ``|`` between classes is still reported.
"""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Everything that must run on the floor: the package, and the tests and benchmarks that check it.
CHECKED = ('deepconsensus_plugin', 'tests', 'benchmarks')


def declared_floor() -> str:
    """The lowest Python version of ``python_requires`` in setup.py, e.g. '3.9'."""
    setup = (ROOT / 'setup.py').read_text()
    match = re.search(r'python_requires\s*=\s*["\']>=\s*(\d+\.\d+)', setup)
    assert match, 'setup.py declares no python_requires=">=X.Y"'
    return match.group(1)


class _DropInertAnnotations(ast.NodeTransformer):
    """Remove annotations, which ``from __future__ import annotations`` keeps from running."""

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.annotation = None
        return node

    def visit_FunctionDef(self, node):
        node.returns = None
        return self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AnnAssign:
        node.annotation = ast.Name(id='object', ctx=ast.Load())
        return self.generic_visit(node)


def runtime_source(source: str) -> str:
    """The code of ``source`` that runs at import or call time, for vermin to judge."""
    tree = ast.parse(source)
    postponed = any(isinstance(node, ast.ImportFrom) and node.module == '__future__'
                    and any(alias.name == 'annotations' for alias in node.names)
                    for node in tree.body)
    if not postponed:
        return source
    return ast.unparse(ast.fix_missing_locations(_DropInertAnnotations().visit(tree)))


def vermin_violations(sources: dict, tmp_path: Path, floor: str) -> subprocess.CompletedProcess:
    """Run vermin with the floor as target over the runtime code of ``sources`` (name -> text)."""
    for name, source in sources.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(runtime_source(source))
    command = [sys.executable, '-c', 'import sys, vermin; sys.exit(vermin.main())',
               f'--target={floor}-', '--violations', '--feature', 'union-types', '--no-tips',
               '-vv', str(tmp_path)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_code_needs_no_python_newer_than_the_declared_floor(tmp_path):
    sources = {str(path.relative_to(ROOT)): path.read_text(encoding='utf-8')
               for folder in CHECKED for path in (ROOT / folder).rglob('*.py')}
    result = vermin_violations(sources, tmp_path, declared_floor())
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize('source, fails', [
    ('import os\nPathLike = str | os.PathLike\n', True),
    ('def f(x):\n    return isinstance(x, int | str)\n', True),
    ('def f(x: int | None) -> None:\n    pass\n', True),  # evaluated at definition time
    ('from __future__ import annotations\ndef f(x: int | None) -> str | None:\n'
     '    y: int | None = x\n    return None\n', False),
    ('from __future__ import annotations\nimport os\nPathLike = str | os.PathLike\n', True),
    ('def f(a, b):\n    return {**a, **b}\n', False),
])
def test_the_check_tells_runtime_unions_from_inert_annotations(tmp_path, source, fails):
    result = vermin_violations({'module.py': source}, tmp_path, '3.9')
    assert (result.returncode != 0) == fails, result.stdout + result.stderr
