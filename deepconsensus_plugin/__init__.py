"""Deep Consensus for Scipion: prune false-positive particle picks by consensus and a CNN.

Scipion finds this package through the ``pyworkflow.plugin`` entry point and
collects its protocols, viewers and wizards from the sub-packages of the same
names.  The numerical work lives in :mod:`deepconsensus_plugin.core`, which
imports nothing from Scipion; the ``Plugin`` class is therefore loaded only
when Scipion asks for it, so that the core, the benchmarks and the demo can be
imported (and can configure a headless Scipion) before pyworkflow starts.
"""

__version__ = "0.1.0"
URL = "https://pypi.org/project/scipion-em-deepconsensus/"
"""The plugin's page, which every run's log names (pwem.Plugin's default is pwem's)."""
_logo = ""
_references = ["SanchezGarcia2018"]


def __getattr__(name: str):
    if name == "Plugin":
        globals()["Plugin"] = _definePlugin()
        return globals()["Plugin"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ENV_ACTIVATION = "DEEPCONSENSUS_ENV_ACTIVATION"
"""Shell command run before each job (e.g. ``source /opt/dc/bin/activate`` or a
``module load``); empty by default."""
PYTHON = "DEEPCONSENSUS_PYTHON"
"""The Python that runs the jobs; by default Scipion's own when it has TensorFlow, else
the one of the environment ``scipion installb deepconsensus`` creates."""
HOME = "DEEPCONSENSUS_HOME"
"""Where ``scipion installb deepconsensus`` creates that environment (under EM_ROOT)."""
JOB_PYTHON_FLOOR = (3, 9)
"""The jobs (core and command, with TensorFlow >= 2.16) need this Python; the Scipion layer
(plugin, protocols, viewers, wizards and what they import) runs on setup.py's floor, 3.8,
the Python scipion-installer still gives Scipion (tests/test_python_floor.py holds both)."""
BASE_PYTHON = "DEEPCONSENSUS_BASE_PYTHON"
"""The Python (>= 3.9) the job environment is created from; default ``python3``."""
JOB_REQUIREMENTS = ["numpy>=1.23", "scipy>=1.9", "mrcfile>=1.4", "tifffile>=2020.9",
                    "starfile>=0.5.13", "keras>=3.7", "tqdm>=4.60"]
"""What the jobs need besides TensorFlow and this package: setup.py's for Python >= 3.9,
less Scipion's (tests/test_plugin.py holds the two lists together)."""
TENSORFLOW_VERSION = ">=2.16"
"""setup.py's TensorFlow floor, which the job environment keeps (tests/test_plugin.py holds
the two together)."""
TENSORFLOW = {"cpu": "tensorflow" + TENSORFLOW_VERSION,
              "gpu": "tensorflow[and-cuda]" + TENSORFLOW_VERSION}
"""The two flavours of the job environment: the GPU one brings CUDA and cuDNN as wheels."""


def _definePlugin():
    """Define the Scipion ``Plugin`` class on first use (it must belong to this module)."""
    import importlib.util
    import os
    import sys

    import pwem
    import pyworkflow.utils as pwutils

    class Plugin(pwem.Plugin):
        """Scipion plugin entry: where the heavy stages run.

        The protocol runs extraction, training and scoring as jobs of the
        ``deepconsensus job`` command (``python -m deepconsensus_plugin.cli job``)
        in the plugin's environment, so that Scipion's own process never imports
        TensorFlow and Scipion can run the jobs in parallel or on a cluster queue.
        When Scipion's Python already has TensorFlow (``pip install`` of this
        package on Python >= 3.9 brings it), the jobs use that Python: nothing to
        install, nothing to keep in step.  Otherwise (Scipion on Python 3.8,
        where TensorFlow >= 2.16 cannot install) ``scipion installb deepconsensus``
        creates a virtualenv with TensorFlow, the package and its numerical
        dependencies, and the jobs run there.  A virtualenv rather than conda:
        TensorFlow ships as pip wheels, the GPU flavour's CUDA libraries too
        (``tensorflow[and-cuda]``), so no conda channel is involved; only a
        Python >= 3.9 to create it from is needed (DEEPCONSENSUS_BASE_PYTHON).
        """

        _url = URL
        _homeVar = HOME

        @classmethod
        def _defineVariables(cls) -> None:
            cls._defineEmVar(HOME, "deepconsensus-%s" % __version__,
                             description="The job environment that 'scipion installb "
                                         "deepconsensus' creates")
            own = importlib.util.find_spec("tensorflow") is not None
            default = sys.executable if own else cls.getHome("bin", "python")
            cls._defineVar(PYTHON, default,
                           description="The Python that runs the jobs (extraction, training, "
                                       "scoring): Scipion's own when it has TensorFlow, else "
                                       "the job environment's")
            cls._defineVar(ENV_ACTIVATION, "",
                           description="Shell command run before each job, e.g. 'module load "
                                       "cuda' (optional)")
            cls._defineVar(BASE_PYTHON, "python3",
                           description="The Python >= 3.9 'scipion installb deepconsensus' "
                                       "creates the job environment from")

        @classmethod
        def getJobPython(cls) -> str:
            return cls.getVar(PYTHON)

        @classmethod
        def usesOwnPython(cls) -> bool:
            """Whether the jobs run on the Python of this Scipion process."""
            return os.path.realpath(cls.getJobPython()) == os.path.realpath(sys.executable)

        @classmethod
        def getJobProgram(cls) -> str:
            """The program ``runJob`` starts: the ``deepconsensus`` command in the job
            environment (after its activation command, when one is set)."""
            activation = cls.getVar(ENV_ACTIVATION)
            program = "%s -m deepconsensus_plugin.cli" % cls.getJobPython()
            return "%s && %s" % (activation, program) if activation else program

        @classmethod
        def getEnviron(cls):
            """The jobs' environment.  In an environment of its own the job must not see
            Scipion's packages (another Python's numpy breaks it): PYTHONPATH keeps only
            this package's source folder when it runs from one (a checkout or an editable
            install), so the jobs run the same code as the protocol."""
            environ = pwutils.Environ(os.environ)
            if not cls.usesOwnPython():
                source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
                if os.path.basename(source) in ("site-packages", "dist-packages"):
                    environ.pop("PYTHONPATH", None)
                else:
                    environ["PYTHONPATH"] = source
            return environ

        @classmethod
        def defineBinaries(cls, env) -> None:
            """``deepconsensus``: a virtualenv with TensorFlow (CPU) and this package, for a
            Scipion whose Python cannot have TensorFlow; ``deepconsensus-gpu`` adds the
            CUDA libraries to it (``tensorflow[and-cuda]``)."""
            source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            package = (source if os.path.exists(os.path.join(source, "setup.py"))
                       else "scipion-em-deepconsensus==%s" % __version__)
            pip = "bin/python -m pip install --quiet"
            base = cls.getVar(BASE_PYTHON)
            floor = "%d.%d" % JOB_PYTHON_FLOOR
            check = ("%s -c 'import sys; sys.exit(sys.version_info < (%s) and "
                     "\"%s is Python %%d.%%d: the job environment needs Python >= %s (set "
                     "%s)\" %% sys.version_info[:2])'"
                     % (base, floor.replace(".", ", "), base, floor, BASE_PYTHON))
            create = " && ".join([
                check, "%s -m venv ." % base,  # the package folder is the virtualenv
                "%s --upgrade pip" % pip,
                "%s %s" % (pip, " ".join("'%s'" % r for r in JOB_REQUIREMENTS
                                         + [TENSORFLOW["cpu"]])),
                "%s --no-deps '%s'" % (pip, package), "touch installed"])
            env.addPackage("deepconsensus", version=__version__, tar="void.tgz",
                           commands=[(create, ["installed"])], neededProgs=[base],
                           default=importlib.util.find_spec("tensorflow") is None)
            gpu = "(cd '%s' && %s '%s') && touch installed" % (cls.getHome(), pip,
                                                               TENSORFLOW["gpu"])
            env.addPackage("deepconsensus-gpu", version=__version__, tar="void.tgz",
                           deps=["deepconsensus"], commands=[(gpu, ["installed"])],
                           default=False)

    Plugin.__qualname__ = "Plugin"
    return Plugin
