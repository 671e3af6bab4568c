"""The DC-retained / DC-pruned outputs, shared by the deep-consensus and re-threshold protocols."""
from typing import Callable, Dict

from pwem.objects import SetOfCoordinates

from .. import convert
from ..core.selection import Split
from ..results import RunResults

OUTPUT_RETAINED = "outputCoordinatesRetained"
OUTPUT_PRUNED = "outputCoordinatesPruned"
# A dict, not an enum.Enum: enum members with the same value (both are
# SetOfCoordinates) become aliases of one member, and one output would vanish.
POSSIBLE_OUTPUTS = {OUTPUT_RETAINED: SetOfCoordinates, OUTPUT_PRUNED: SetOfCoordinates}


def registerSplit(protocol, dcRun, results: RunResults, split: Split):
    """Register on ``protocol`` the retained and pruned sets of ``dcRun`` cut by ``split``.

    Both sets point to the micrographs of the run's first input set; each set is related
    to every input set.
    """
    micsPointer = dcRun.inputCoordinates[0].get().getMicrographs(asPointer=True)
    outputs = splitSets(results, split, lambda suffix: protocol._createSetOfCoordinates(
        micsPointer, suffix=suffix))
    protocol._defineOutputs(**outputs)
    for pointer in dcRun.inputCoordinates:
        for coordSet in outputs.values():
            protocol._defineSourceRelation(pointer, coordSet)


def splitSets(results: RunResults, split: Split,
              newSet: Callable[[str], SetOfCoordinates]) -> Dict[str, SetOfCoordinates]:
    """The retained and pruned sets (by output name), each made by ``newSet(suffix)`` and
    filled: the input coordinates' box size, and on every coordinate ``_dcScore``,
    ``_dcVotes``, ``_dcDuplicate`` (pruned only because a better retained coordinate is
    too close) and ``_dcAtEdge`` (pruned only because it lies too close to the
    micrograph's edge).  Apart from registering, this is all the protocols' output step
    does per coordinate, so ``benchmarks/scale.py`` times it at scale."""
    table = results.table
    outputs = {}
    for name, rows, suffix in ((OUTPUT_RETAINED, split.retained, "retained"),
                               (OUTPUT_PRUNED, split.pruned, "pruned")):
        coordSet = newSet(suffix)
        coordSet.setBoxSize(results.outputBox)
        convert.fillCoordinates(coordSet, rows, table.mic, table.xy, results.scores,
                                table.votes, split.duplicate, split.at_edge,
                                results.micrographs)
        outputs[name] = coordSet
    return outputs
