"""pytest set-up: a throwaway headless Scipion configuration for the whole session.

pyworkflow reads its configuration once, at first import, so it is set here,
before any test module imports Scipion.
"""
import tempfile

import pytest

from deepconsensus_plugin import headless

headless.configure(tempfile.mkdtemp(prefix="deepconsensus-tests-"))

from deepconsensus_plugin.core import stages, synthetic  # noqa: E402
from deepconsensus_plugin.core.run_folder import Micrograph, RunFolder  # noqa: E402


@pytest.fixture()
def prepared(tmp_path):
    """A run folder after consensus and negatives (off-centre ones too, so the negative
    table is not ordered by micrograph) on four synthetic micrographs, box 48 px; for
    the shard and best-centred-scoring tests."""
    mics, pickers = synthetic.make_dataset(str(tmp_path / "mics"), n_micrographs=4,
                                           shape=(384, 384), n_particles=40, diameter=32)
    inputs = stages.ConsensusInput(
        micrographs=[Micrograph(mic_id=i + 1, name="m%d" % i, path=m.path, label=m.path)
                     for i, m in enumerate(mics)],
        pickers=[stages.PickerInput("p%d" % p, {i + 1: xy for i, xy in enumerate(picks)})
                 for p, picks in enumerate(pickers)],
        box=48, sampling_rate=2.0)
    run = RunFolder(tmp_path / "run")
    stages.consensus_stage(run, inputs)
    stages.negatives_stage(run, stages.NegativeParams(offcentre=True, seed=2))
    return run, mics
