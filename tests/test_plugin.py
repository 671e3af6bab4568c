"""The plugin's job environment (the Python the jobs run on, their environment variables,
what 'scipion installb' installs) and the check of the GPUs TensorFlow sees there."""
import ast
import json
import os
import subprocess
import sys

import pwem
import pytest

import deepconsensus_plugin
from deepconsensus_plugin import (BASE_PYTHON, ENV_ACTIVATION, JOB_REQUIREMENTS, PYTHON,
                                  TENSORFLOW)
from deepconsensus_plugin.core.runtime import GPU_CHECK, gpu_warning

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(deepconsensus_plugin.__file__)))


@pytest.fixture()
def plugin(monkeypatch):
    """The registered Plugin class, its variables restored after the test."""
    pwem.Domain.getPlugin("deepconsensus_plugin")
    from deepconsensus_plugin import Plugin

    for name in (PYTHON, ENV_ACTIVATION, BASE_PYTHON):
        monkeypatch.setitem(Plugin._vars, name, Plugin.getVar(name))
    return Plugin


def _install_requires() -> list:
    """setup.py's install_requires, read from its source."""
    with open(os.path.join(SOURCE, "setup.py")) as handle:
        tree = ast.parse(handle.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return [ast.literal_eval(item) for item in node.value.elts]
    raise AssertionError("setup.py has no install_requires")


def test_the_job_environment_installs_what_the_package_needs():
    """The job environment installs this package without its dependencies (Scipion's
    are not wanted there), so its list must hold every other one: a module the jobs
    import (tifffile, by the extraction) missing there fails every job."""
    wanted, tensorflow = set(), []
    for requirement in _install_requires():
        spec, _, marker = requirement.partition(";")
        if spec.startswith("tensorflow"):
            tensorflow.append(spec.strip())
        elif "< '3.9'" not in marker and not spec.startswith("scipion-"):
            wanted.add(spec.strip())
    assert wanted == set(JOB_REQUIREMENTS)
    # the job environment's TensorFlow has the package's floor, in both flavours
    assert tensorflow == [TENSORFLOW["cpu"]]
    assert TENSORFLOW["gpu"] == TENSORFLOW["cpu"].replace("tensorflow", "tensorflow[and-cuda]")


def test_jobs_use_scipions_own_python_when_it_has_tensorflow(plugin):
    # this venv has TensorFlow: the jobs run on it, with the environment as it is
    assert plugin.getJobPython() == sys.executable and plugin.usesOwnPython()
    assert plugin.getJobProgram() == "%s -m deepconsensus_plugin.cli" % sys.executable
    assert plugin.getEnviron().get("PYTHONPATH") == os.environ.get("PYTHONPATH")


def test_a_job_environment_of_its_own_sees_only_this_package(plugin):
    plugin._vars[PYTHON] = "/opt/dc/bin/python"
    plugin._vars[ENV_ACTIVATION] = "module load cuda/12"
    assert not plugin.usesOwnPython()
    assert plugin.getJobProgram() == \
        "module load cuda/12 && /opt/dc/bin/python -m deepconsensus_plugin.cli"
    # a source checkout (as here): the jobs import the same code, not Scipion's packages
    assert plugin.getEnviron()["PYTHONPATH"] == SOURCE


class _Environment:
    """What 'scipion installb' is given by defineBinaries."""

    def __init__(self):
        self.packages = {}

    def addPackage(self, name, **kwargs):
        self.packages[name] = kwargs


def test_installb_creates_a_virtualenv_with_tensorflow_and_the_gpu_flavour_adds_cuda(plugin):
    env = _Environment()
    plugin.defineBinaries(env)
    cpu, gpu = env.packages["deepconsensus"], env.packages["deepconsensus-gpu"]
    (command, targets), = cpu["commands"]
    steps = command.split(" && ")
    assert steps[1] == "%s -m venv ." % plugin.getVar(BASE_PYTHON)
    assert "'%s'" % TENSORFLOW["cpu"] in command and "and-cuda" not in command
    assert "--no-deps '%s'" % SOURCE in command  # this package, without Scipion's
    assert targets == ["installed"] and steps[-1] == "touch installed"
    assert cpu["default"] is False  # Scipion's Python has TensorFlow here: nothing to install
    assert plugin.getHome().endswith("deepconsensus-%s" % deepconsensus_plugin.__version__)
    assert plugin.getHome("bin", "python") != sys.executable
    # the first step refuses a Python older than the jobs' floor; this one passes
    assert subprocess.run(steps[0].replace(plugin.getVar(BASE_PYTHON), sys.executable, 1),
                          shell=True).returncode == 0
    (gpuCommand, _), = gpu["commands"]
    assert "'%s'" % TENSORFLOW["gpu"] in gpuCommand and gpu["deps"] == ["deepconsensus"]
    assert plugin.getHome() in gpuCommand


def report(booked, seen, cuda=True):
    return {"python": "/opt/dc/bin/python", "tensorflow": "2.21.0", "built_with_cuda": cuda,
            "gpus_booked": booked, "gpus_seen": seen}


def test_gpus_booked_and_seen_or_none_booked_need_no_warning():
    assert gpu_warning(report([0, 1], ["/physical_device:GPU:0", "/physical_device:GPU:1"])) \
        is None
    assert gpu_warning(report([], [])) is None


@pytest.mark.parametrize("cuda, cause", [(False, "CPU-only flavour"),
                                         (True, "CUDA libraries or the GPU driver")])
def test_gpus_booked_and_unseen_give_the_cause_and_the_fix(cuda, cause):
    warning = gpu_warning(report([0, 1], [], cuda))
    assert warning.startswith("WARNING: GPU 0,1 booked, but TensorFlow 2.21.0 in the job "
                              "environment (/opt/dc/bin/python) sees no GPU")
    assert "run on the CPU" in warning and cause in warning
    assert "tensorflow[and-cuda]" in warning
    assert GPU_CHECK.replace("python", "/opt/dc/bin/python", 1) in warning


def test_the_check_job_reports_this_environment(tmp_path):
    """'deepconsensus job check' with a GPU id no machine has: the warning, printed and
    written to the run folder (on any machine, with or without a GPU)."""
    result = subprocess.run([sys.executable, "-m", "deepconsensus_plugin.cli", "job", "check",
                             "--out", str(tmp_path), "--gpus", "97"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("WARNING: GPU 97 booked")
    written = json.loads((tmp_path / "environment.json").read_text())
    assert written["gpus_booked"] == [97] and written["gpus_seen"] == []
    assert written["python"] == sys.executable and written["warning"] in result.stdout
