"""Two Python floors, checked with vermin: the Scipion layer (plugin, protocols, viewers,
wizards and every module they import) needs no Python newer than ``setup.py``'s floor
(3.8, what scipion-installer gives Scipion); the rest of the package (the core and the
command, which run as jobs with TensorFlow), its tests and benchmarks none newer than
the jobs' floor (``JOB_PYTHON_FLOOR``, 3.9).

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
#: Everything that must run on the jobs' floor: the package, and the tests and benchmarks.
CHECKED = ('deepconsensus_plugin', 'tests', 'benchmarks')
PACKAGE = 'deepconsensus_plugin'
#: What Scipion's process loads: the plugin and the modules pyworkflow collects from it.
SCIPION_LAYER = ('__init__.py', 'protocols', 'viewers', 'wizards.py')


def declared_floor() -> str:
    """The lowest Python version of ``python_requires`` in setup.py, e.g. '3.9'."""
    setup = (ROOT / 'setup.py').read_text()
    match = re.search(r'python_requires\s*=\s*["\']>=\s*(\d+\.\d+)', setup)
    assert match, 'setup.py declares no python_requires=">=X.Y"'
    return match.group(1)


def job_floor() -> str:
    from deepconsensus_plugin import JOB_PYTHON_FLOOR

    return '%d.%d' % JOB_PYTHON_FLOOR


def _module_file(name: str):
    """The file of module ``name`` of this package, or None (a name imported from one)."""
    path = ROOT / name.replace('.', '/')
    for candidate in (path / '__init__.py', path.with_suffix('.py')):
        if candidate.exists():
            return candidate
    return None


def package_imports(path: Path, everywhere: bool) -> set:
    """The files of this package that ``path`` imports: at module level, or ``everywhere``
    (function bodies too)."""
    tree = ast.parse(path.read_text(encoding='utf-8'))
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    package = parts[:-1]  # a module's package; an __init__'s package is its folder
    found = set()
    for node in (ast.walk(tree) if everywhere else tree.body):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = '.'.join(base + ([node.module] if node.module else []))
            names = [module] + [module + '.' + alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {f for f in map(_module_file, names)
                  if f is not None and names[0].startswith(PACKAGE)}
    return found


def scipion_layer_files() -> set:
    """The Scipion layer and what it imports: every import of its own files (a viewer's
    lazy one too), and the module-level imports of the modules they reach."""
    start = set()
    for entry in SCIPION_LAYER:
        path = ROOT / PACKAGE / entry
        start |= set(path.rglob('*.py')) if path.is_dir() else {path}
    seen, todo = set(), list(start)
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(package_imports(path, everywhere=path in start))
    return seen


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


BUILTIN_GENERICS = {'tuple', 'list', 'dict', 'set', 'frozenset', 'type'}


def builtin_generics(source: str) -> list:
    """Lines that subscript a builtin type at run time (``tuple[int, int]``: Python 3.9+).

    vermin sees them only in annotations; an alias such as ``Source = tuple[A, B]`` fails
    on 3.8 at import all the same."""
    tree = ast.parse(runtime_source(source))
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
            and node.value.id in BUILTIN_GENERICS]


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


def test_code_needs_no_python_newer_than_the_jobs_floor(tmp_path):
    sources = {str(path.relative_to(ROOT)): path.read_text(encoding='utf-8')
               for folder in CHECKED for path in (ROOT / folder).rglob('*.py')}
    result = vermin_violations(sources, tmp_path, job_floor())
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_scipion_layer_and_its_imports_need_no_python_newer_than_setup_floor(tmp_path):
    files = scipion_layer_files()
    names = {str(path.relative_to(ROOT)) for path in files}
    # the closure reaches the core the protocol runs in its own process...
    assert {'deepconsensus_plugin/core/stages.py', 'deepconsensus_plugin/core/run_folder.py',
            'deepconsensus_plugin/convert.py'} <= names
    # ...and not the command, whose jobs run in the plugin's environment
    assert not any(name.startswith('deepconsensus_plugin/cli/') for name in names)
    assert declared_floor() == '3.8'
    sources = {name: (ROOT / name).read_text(encoding='utf-8') for name in names}
    result = vermin_violations(sources, tmp_path / 'scipion', declared_floor())
    assert result.returncode == 0, result.stdout + result.stderr
    generics = {name: lines for name, lines in
                ((name, builtin_generics(source)) for name, source in sources.items()) if lines}
    assert not generics, 'builtin generics at run time (3.9+): %s' % generics


@pytest.mark.parametrize('source, lines', [
    ('import numpy as np\nSource = tuple[np.ndarray, np.ndarray]\n', [2]),
    ('def f(x: list[int]) -> None:\n    pass\n', [1]),  # evaluated at definition time
    ('from __future__ import annotations\ndef f(x: list[int]) -> dict[str, int]:\n'
     '    return {}\n', []),
    ('from typing import Tuple\nSource = Tuple[int, int]\nfirst = [1, 2][0]\n', []),
])
def test_the_check_finds_builtin_generics_that_run(source, lines):
    assert builtin_generics(source) == lines


def test_the_scipion_layer_imports_no_tensorflow_at_module_level():
    """TensorFlow (or Keras) only inside functions that run in the jobs."""
    for path in scipion_layer_files():
        tree = ast.parse(path.read_text(encoding='utf-8'))
        for node in tree.body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split('.')[0] in ('tensorflow', 'keras') for n in names), path


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
