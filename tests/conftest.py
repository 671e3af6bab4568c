"""pytest set-up: a throwaway headless Scipion configuration for the whole session.

pyworkflow reads its configuration once, at first import, so it is set here,
before any test module imports Scipion.  The folder holds the protocol tests'
projects (tens of MB a run); it goes when the session passes and stays, named in
the summary, when a test fails, so the failing project can be opened.
"""
import os
import shutil
import tempfile

import pytest

from deepconsensus_plugin import headless

_SCRATCH = tempfile.mkdtemp(prefix="deepconsensus-tests-")
_SCRATCH_IN_USE = headless.configure(_SCRATCH) == os.path.abspath(_SCRATCH)
"""False where ``SCIPION_USER_DATA`` named the user's own folder, which the tests then use."""

from deepconsensus_plugin.core import stages, synthetic  # noqa: E402
from deepconsensus_plugin.core.run_folder import RunFolder  # noqa: E402

from .synthetic_inputs import consensus_input  # noqa: E402


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the throwaway Scipion folder after a passing session; a folder given in
    ``SCIPION_USER_DATA`` is the user's and stays."""
    if not _SCRATCH_IN_USE or exitstatus == 0:
        shutil.rmtree(_SCRATCH, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    """Name the kept folder, so the projects of a failing session can be found."""
    if _SCRATCH_IN_USE and exitstatus != 0:
        terminalreporter.write_line("Scipion projects of this session kept in %s" % _SCRATCH)


@pytest.fixture()
def prepared(tmp_path):
    """A run folder after consensus and negatives (off-centre ones too, so the negative
    table is not ordered by micrograph) on four synthetic micrographs, box 48 px; for
    the shard and best-centred-scoring tests."""
    mics, pickers = synthetic.make_dataset(str(tmp_path / "mics"), n_micrographs=4,
                                           shape=(384, 384), n_particles=40, diameter=32)
    inputs = consensus_input(mics, pickers, box=48, name="m%d", picker_name="p%d")
    run = RunFolder(tmp_path / "run")
    stages.consensus_stage(run, inputs)
    stages.negatives_stage(run, stages.NegativeParams(offcentre=True, seed=2))
    return run, mics
