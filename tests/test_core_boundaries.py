"""The core is what every front end shares (the protocol, the command line, the
benchmarks): importing it must load neither Scipion, which a RELION or cryoSPARC user
running the command line does not have, nor TensorFlow, which costs seconds in each of
the many processes where Scipion imports its plugins; the code that trains or scores
imports TensorFlow when it runs.
"""
import pkgutil
import subprocess
import sys

import deepconsensus_plugin.core as core

FORBIDDEN = ("pyworkflow", "pwem", "tensorflow", "keras")


def test_importing_every_core_module_loads_neither_scipion_nor_tensorflow():
    modules = sorted("deepconsensus_plugin.core." + info.name
                     for info in pkgutil.iter_modules(core.__path__))
    code = ("import importlib, sys\n"
            "for name in %r:\n"
            "    importlib.import_module(name)\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & set(%r))))"
            % (modules, FORBIDDEN))
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert "deepconsensus_plugin.core.stages" in modules and len(modules) > 20
    assert loaded == []
