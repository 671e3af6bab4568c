"""deepconsensus_plugin.headless: the environment a Scipion run without a Scipion install needs."""
import os
import sys
import warnings

import pytest

from deepconsensus_plugin import headless

VARIABLES = ("SCIPION_DOMAIN", "SCIPION_USER_DATA", "SCIPION_HOSTS", "SCIPION_PYTHON")


def configure_clean(monkeypatch, tmp_path, **preset):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in preset.items():
        monkeypatch.setenv(name, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyworkflow is already imported in this session
        return headless.configure(str(tmp_path / "data"))


def test_sets_every_variable_and_writes_a_hosts_file(monkeypatch, tmp_path):
    data = configure_clean(monkeypatch, tmp_path)
    assert data == str(tmp_path / "data")
    assert os.environ["SCIPION_DOMAIN"] == "pwem"
    assert os.environ["SCIPION_PYTHON"] == sys.executable
    with open(os.environ["SCIPION_HOSTS"]) as handle:
        assert handle.read().startswith("[localhost]")


def test_values_already_set_win(monkeypatch, tmp_path):
    hosts = tmp_path / "mine.conf"
    configure_clean(monkeypatch, tmp_path, SCIPION_HOSTS=str(hosts),
                    SCIPION_USER_DATA=str(tmp_path / "elsewhere"))
    assert os.environ["SCIPION_HOSTS"] == str(hosts)
    assert os.environ["SCIPION_USER_DATA"] == str(tmp_path / "elsewhere")
    assert not hosts.exists()  # never written over the user's own file


def test_warns_when_pyworkflow_was_imported_first(monkeypatch, tmp_path):
    import pyworkflow  # noqa: F401  (the situation the warning is about)

    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        headless.configure(str(tmp_path))
    assert any("pyworkflow was imported" in str(w.message) for w in caught)


def test_project_command_opens_an_existing_project_without_scipion_app(monkeypatch):
    """``deepconsensus-project NAME`` (the demo's last line) opens pyworkflow's project window
    in-process: pw_project would start ``python -O -m scipion`` (scipion-app) instead."""
    import pyworkflow.gui.project
    from pyworkflow.project import Manager

    from deepconsensus_plugin import demo, project

    opened = []

    class Window:  # stands in for the Tk window, which needs a display
        def __init__(self, path):
            self.path = path

        def show(self):
            opened.append(self.path)

    monkeypatch.setattr(pyworkflow.gui.project, "ProjectWindow", Window)
    path = Manager().createProject("OpenMe").getPath()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyworkflow is already imported in this session
        assert project.main(["OpenMe"]) == 0
        assert project.main([path]) == 0  # the folder the demo prints first works too
        with pytest.raises(SystemExit, match="No Scipion project 'NoSuchProject' .*OpenMe"):
            project.main(["NoSuchProject"])  # names the projects that are there
    assert opened == [path, path]
    assert "scipion" not in sys.modules
    assert demo.open_command("OpenMe", None) == (
        "%s -m deepconsensus_plugin.project OpenMe" % sys.executable)
