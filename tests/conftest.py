"""pytest set-up: a throwaway headless Scipion configuration for the whole session.

pyworkflow reads its configuration once, at first import, so it is set here,
before any test module imports Scipion.
"""
import tempfile

import pytest

from deepconsensus_plugin import headless

headless.configure(tempfile.mkdtemp(prefix="deepconsensus-tests-"))

from deepconsensus_plugin.core import stages, synthetic  # noqa: E402
from deepconsensus_plugin.core.run_folder import RunFolder  # noqa: E402

from .synthetic_inputs import consensus_input  # noqa: E402


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
