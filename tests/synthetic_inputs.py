"""The stages' input built from :func:`deepconsensus_plugin.core.synthetic.make_dataset`.

Several test modules run the stages on synthetic micrographs; they differ in sizes and
in the names they give, not in how the input is put together, so that is written once.
"""
from deepconsensus_plugin.core import stages
from deepconsensus_plugin.core.run_folder import Micrograph


def consensus_input(mics, pickers, box: int, name: str = "mic%d", label: str = "%s.mrc",
                    picker_name: str = "picker %d") -> stages.ConsensusInput:
    """Micrograph ``i`` of ``mics`` becomes ``mic_id`` i + 1 named ``name % i``, its label
    ``label % name``; picker ``p`` is named ``picker_name % p``; 2 Å per pixel."""
    micrographs = []
    for i, mic in enumerate(mics):
        mic_name = name % i
        micrographs.append(Micrograph(mic_id=i + 1, name=mic_name, path=mic.path,
                                      label=label % mic_name))
    return stages.ConsensusInput(
        micrographs=micrographs,
        pickers=[stages.PickerInput(picker_name % p, {i + 1: xy for i, xy in enumerate(picks)})
                 for p, picks in enumerate(pickers)],
        box=box, sampling_rate=2.0)
