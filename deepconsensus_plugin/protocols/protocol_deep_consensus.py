"""ProtDeepConsensus: prune false-positive picks with consensus and a CNN.

The protocol only maps Scipion objects to the core (``deepconsensus_plugin.core``)
and back.  Each stage keeps its result in the run's ``extra/`` folder and
receives the parameters it depends on, so that "continue" re-runs only the
stages after the first changed parameter (a new threshold re-creates only
the outputs; new training settings reuse consensus and extraction).
"""
import json
import os

import numpy as np
import pyworkflow.protocol.params as params
from pwem.protocols import ProtParticles
from pyworkflow import BETA
from pyworkflow.protocol import Protocol
from pyworkflow.utils import Message

from .. import convert
from ..results import RunResults
from ..core import extraction, pipeline
from ..core.agreement import dawid_skene, score_logit
from ..core.stack import create_stack, open_stack
from ..core.consensus import rescale
from ..core.model import ARCHITECTURES, DEFAULT_SIZE
from ..core.selection import DEFAULT_MIN_DISTANCE
from ..core.negatives import fraction_on_picks
from ..core.thresholds import automatic_threshold
from .outputs import POSSIBLE_OUTPUTS, registerSplit

MIN_POSITIVES = 100
"""Fewer AND particles than this cannot train a classifier that generalises."""
OFFCENTRE_SHIFT = 0.3
"""Off-centre negatives lie this fraction of the box from a positive: about half a
particle diameter for the usual box, so the box shows the particle's edge."""
OFFCENTRE_CLEARANCE = 0.2
"""...and at least this fraction of the box from every pick, so they centre on no particle."""
SELF_TRAINING_CONFIDENCE = 0.9
"""The second round learns from OR coordinates whose first-round combined score is at
least this (particles) or at most one minus this (what the pickers picked by mistake)."""


def notPrefilled(className):
    """The pointerClass of an optional input that the form must not fill in by itself.

    When a run is selected in the project, pyworkflow's form (3.11,
    ``FormWindow.suggestValueFromPreviousProt``) fills every empty PointerParam
    with that run's first output whose class name is in ``pointerClass``, with
    no switch to turn it off; a picker's particles would silently become known
    negatives.  The pre-fill compares the names as written, the object browser
    strips them before looking the classes up: with a trailing space the input
    is still browsable and no longer pre-filled.
    """
    return className + " "


def summaryLines(info):
    """The run's summary, result first, from the counts its steps recorded in info.json."""
    if "nOr" not in info:
        return ["Not run yet."]
    lines = ["Consensus of %d pickers on %d micrographs (radius %.1f px): OR %d, "
             "AND (picked by >= %d) %d."
             % (info["nPickers"], info["nMicrographs"], info["radiusPx"], info["nOr"],
                info["minVotes"], info["nAnd"])]
    if info.get("ignoredMicrographEntries"):
        lines.append("Only micrographs common to all input sets were used; %d "
                     "micrograph entries were left out." % info["ignoredMicrographEntries"])
    if info.get("otherBoxSizes"):
        lines.append("The input sets have other box sizes too (%s px); the first set's "
                     "%d px was used." % (", ".join(map(str, info["otherBoxSizes"])),
                                         info["box"]))
    if info.get("rescaledSets"):
        lines.append("Rescaled to %.3f A/px: %s." % (info["samplingRate"],
                                                    ", ".join(info["rescaledSets"])))
    if "nNegRandom" in info:
        lines.append("Negatives: %d random, %d off-centre, %d known coordinates, %d known "
                     "particles." % (info["nNegRandom"], info.get("nNegOffCentre", 0),
                                     info["nNegUserCoords"], info.get("nNegUserParticles", 0)))
    if info.get("skippedMicrographs"):
        lines.append("Skipped %d unreadable micrographs: %s."
                     % (len(info["skippedMicrographs"]),
                        ", ".join(info["skippedMicrographs"])))
    if info.get("nCrossingBorder"):
        lines.append("%d boxes crossed the micrograph border (filled with the mean)."
                     % info["nCrossingBorder"])
    for trained in info.get("rounds", []):
        line = ("Network '%s', round %d: %d epochs, validation accuracy %.3f"
                % (info["architecture"], trained["round"], trained["epochs"],
                   trained["valAccuracy"]))
        if trained["round"] > 1:
            line += (" (%d particles, %d hard negatives from the first round)"
                     % (trained["nPositives"], trained["nHardNegatives"]))
        lines.append(line + ".")
    if info.get("agreement"):
        agreement = info["agreement"]
        lines.append("Score = network combined with picker agreement; per input set, "
                     "sensitivity / false-pick rate: %s."
                     % ", ".join("%.2f / %.2f" % pair for pair in
                                 zip(agreement["sensitivity"], agreement["falsePickRate"])))
    if "nRetained" in info:
        total = info["nRetained"] + info["nPruned"]
        result = "Kept {:,} of {:,} coordinates ({:.1f}%) at the {} threshold {:.2f}".format(
            info["nRetained"], total, 100.0 * info["nRetained"] / max(total, 1),
            info.get("thresholdMode", "fixed"), info["threshold"])
        if "valAccuracy" in info:
            result += ", validation accuracy %.2f" % info["valAccuracy"]
        pruned = "; pruned {:,}".format(info["nPruned"])
        if info.get("nDuplicates"):
            pruned += " ({:,} of them duplicates: closer than {:.0f} px to a better retained " \
                      "one)".format(info["nDuplicates"], info["minDistancePx"])
        lines.insert(0, result + pruned + ".")  # the result first
        if info["nRetained"] == 0 or info["nPruned"] == 0:
            lines.append("WARNING: every score is on one side of the threshold; check "
                         "the training curves and the score histogram.")
    return lines


class ProtDeepConsensus(ProtParticles):
    """Deep Consensus (Sanchez-Garcia et al., IUCrJ 2018) prunes false-positive picks.

    Several pickers' coordinates are merged: the coordinates picked by a
    majority of the pickers (or all, or at least k) are the AND set, all of
    them the OR set.  A network
    learns to tell AND particles from random background boxes (NEG) and scores
    every OR coordinate in [0, 1]; those at or above the threshold are
    DC-retained, the rest DC-pruned.
    """

    _label = "deep consensus"
    _devStatus = BETA
    _possibleOutputs = POSSIBLE_OUTPUTS

    AND_ALL = 0
    AND_AT_LEAST = 1
    AND_MAJORITY = 2
    THRESHOLD_FIXED = 0
    THRESHOLD_AUTOMATIC = 1
    METHOD_AGREEMENT = 0
    METHOD_PAPER = 1

    # -------------------------- DEFINE param functions -----------------------
    def _defineParams(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam("inputCoordinates", params.MultiPointerParam,
                      pointerClass="SetOfCoordinates", important=True,
                      label="Input coordinates (two or more pickers)",
                      help="The coordinate sets of two or more pickers on the same "
                           "micrographs. Micrographs are matched by name; box size and "
                           "pixel size are taken from the first set, and the others are "
                           "rescaled to it.")
        form.addParam("method", params.EnumParam, default=self.METHOD_AGREEMENT,
                      choices=["network and picker agreement", "as published (2018)"],
                      display=params.EnumParam.DISPLAY_HLIST, label="Method",
                      help="'network and picker agreement' (recommended): a second network "
                           "also learns from what the pickers picked by mistake, as judged "
                           "by the first; its score is then "
                           "combined with how reliable each picker proved to be (estimated "
                           "from how often the others confirm its picks, no ground truth "
                           "needed). 'as published' reproduces Sanchez-Garcia et al. (2018): "
                           "random negatives, one round, the network's score alone (for the "
                           "publication's AND set, also choose 'picked by all pickers').")
        form.addHidden(params.USE_GPU, params.BooleanParam, default=True,
                       label="Use GPU for training and scoring?")
        form.addHidden(params.GPU_LIST, params.StringParam, default="0",
                       label="GPU IDs")

        form.addSection(label="Consensus")
        form.addParam("consensusRadius", params.FloatParam, default=0.1,
                      label="Consensus radius (fraction of box)",
                      help="Picks of different pickers closer than this fraction of the "
                           "box size are the same particle; their positions are "
                           "averaged. 0.1 (the paper's value) tolerates the usual "
                           "centring error of pickers without merging neighbours.")
        form.addParam("andRule", params.EnumParam, default=self.AND_MAJORITY,
                      choices=["picked by all pickers", "picked by at least k pickers",
                               "picked by a majority of pickers"],
                      display=params.EnumParam.DISPLAY_HLIST,
                      label="Positive (AND) set",
                      help="Which consensus coordinates train the network as true "
                           "particles. 'All' is the paper's rule; with a weak picker among "
                           "three or more it leaves few particles, and those only the "
                           "easiest. 'Majority' (more than half the pickers: both of two, "
                           "2 of 3, 3 of 4) tolerates one weak picker and trains on more "
                           "particles; on EMPIAR-10017 (3 pickers, one weak) it ranks the OR "
                           "set better than 'all'. 'At least k' sets the number yourself.")
        form.addParam("minVotes", params.IntParam, default=2,
                      condition="andRule==%d" % self.AND_AT_LEAST,
                      label="k (minimum number of pickers)",
                      help="A coordinate is positive when at least this many pickers "
                           "picked it.")

        form.addSection(label="Negatives")
        form.addParam("negativeRatio", params.FloatParam, default=1.0,
                      label="Negatives per positive",
                      help="How many random background boxes to draw per AND particle, "
                           "spread evenly over the micrographs. 1 gives balanced "
                           "classes.")
        form.addParam("negativeDistance", params.FloatParam, default=0.5,
                      label="Exclusion distance (fraction of box)",
                      help="Random negatives are at least this fraction of the box away "
                           "from every picked coordinate, so that they show no picked "
                           "particle's centre. The paper uses half a box.")
        form.addParam("offCentreNegatives", params.BooleanParam, default=False,
                      condition="method==%d" % self.METHOD_AGREEMENT,
                      expertLevel=params.LEVEL_ADVANCED, label="Off-centre negatives?",
                      help="Add one negative per AND particle, centred %.0f%% of the box away "
                           "from it (and %.0f%% from every pick): a box showing a particle's "
                           "edge. The network then learns 'a particle at the centre' rather "
                           "than 'a particle somewhere in the box', so badly centred picks and "
                           "the second, off-centre pick of a particle score low. Off by "
                           "default: with the second round and the minimum distance it "
                           "changed F1 by -0.003 and +0.001 on the two benchmark datasets "
                           "and lowered recall, for twice the negatives to train on."
                           % (100 * OFFCENTRE_SHIFT, 100 * OFFCENTRE_CLEARANCE))
        form.addParam("inputNegativeCoordinates", params.PointerParam,
                      pointerClass=notPrefilled("SetOfCoordinates"), allowsNull=True,
                      label="Known negatives: coordinates (optional)",
                      help="Coordinates of things that are not particles (ice, carbon, "
                           "contamination) on the same micrographs, e.g. picked by hand. "
                           "They are added to the random negatives.")
        form.addParam("inputNegativeParticles", params.PointerParam,
                      pointerClass=notPrefilled("SetOfParticles"), allowsNull=True,
                      label="Known negatives: particles (optional)",
                      help="Extracted images of non-particles (e.g. from discarded 2D "
                           "classes). They are resized to the network size and added to "
                           "the negatives; their contrast must match the micrographs'.")

        form.addSection(label="Extraction")
        form.addParam("networkSize", params.IntParam, default=DEFAULT_SIZE,
                      label="Network box size (px)",
                      help="Boxes are Fourier-downsampled to this size before the "
                           "network sees them. 32 px keeps a particle's outline and "
                           "trains about twice as fast as 64 px; raise it for small "
                           "particles in large boxes.")
        form.addParam("invertContrast", params.BooleanParam, default=False,
                      label="Invert contrast?",
                      help="Multiply the particles by -1. Consistency is what matters: "
                           "the network is trained and applied on the same contrast.")
        form.addParam("skipBadMicrographs", params.BooleanParam, default=False,
                      label="Skip unreadable micrographs?",
                      help="If a micrograph file is missing, truncated or holds NaN, "
                           "leave out its coordinates and say so in the summary, instead "
                           "of stopping with an error that names the file.")

        form.addSection(label="Training")
        form.addParam("architecture", params.EnumParam, default=0,
                      choices=list(ARCHITECTURES), display=params.EnumParam.DISPLAY_HLIST,
                      label="Network",
                      help="'fast' is a lean network that matches the paper's accuracy at "
                           "a small fraction of the cost; 'paper' is the network of the "
                           "original publication (Table 1).")
        form.addParam("selfTraining", params.BooleanParam, default=True,
                      condition="method==%d" % self.METHOD_AGREEMENT,
                      expertLevel=params.LEVEL_ADVANCED,
                      label="Second round on confident decisions?",
                      help="Train a second network after the first: OR coordinates whose "
                           "first-round combined score is at least %.2f join the particles, "
                           "those at most %.2f join the negatives. These are the boxes the "
                           "pickers pick by mistake (ice, carbon edges, aggregates, border "
                           "stripes), which random background rarely shows. Doubles the "
                           "training time." % (SELF_TRAINING_CONFIDENCE,
                                               1 - SELF_TRAINING_CONFIDENCE))
        form.addParam("maxEpochs", params.IntParam, default=30,
                      label="Maximum epochs",
                      help="Upper bound on training epochs; training stops earlier when "
                           "the validation loss stops improving.")
        form.addParam("patience", params.IntParam, default=4, expertLevel=params.LEVEL_ADVANCED,
                      label="Early-stopping patience (epochs)",
                      help="Stop after this many epochs without a better validation loss "
                           "and keep the best weights. The learning rate is divided by "
                           "10 after half as many.")
        form.addParam("learningRate", params.FloatParam, default=1e-4,
                      expertLevel=params.LEVEL_ADVANCED, label="Learning rate",
                      help="Adam's initial learning rate (the paper's 1e-4).")
        form.addParam("batchSize", params.IntParam, default=64,
                      expertLevel=params.LEVEL_ADVANCED, label="Batch size",
                      help="Particles per training step. Larger batches make an epoch "
                           "faster, on a GPU especially, and need more memory: lower it if "
                           "the GPU runs out of memory. Scoring uses its own batches.")
        form.addParam("seed", params.IntParam, default=0,
                      expertLevel=params.LEVEL_ADVANCED, label="Random seed",
                      help="Seeds negative sampling, the validation split, augmentation "
                           "and the network's initial weights: the same seed gives the "
                           "same scores on CPU.")

        form.addSection(label="Scoring")
        form.addParam("combineVotes", params.BooleanParam, default=True,
                      condition="method==%d" % self.METHOD_AGREEMENT,
                      expertLevel=params.LEVEL_ADVANCED,
                      label="Combine with picker agreement?",
                      help="The score is the probability that a coordinate is a particle "
                           "given the network's score and which pickers picked it, each "
                           "picker weighted by its sensitivity and false-pick rate as "
                           "estimated by EM (Dawid-Skene) from the data. 'No' scores with "
                           "the network alone.")
        form.addParam("minDistance", params.FloatParam, default=-1,
                      label="Minimum distance between particles (A)",
                      help="A retained coordinate closer than this to a better-scored "
                           "retained one is the same particle picked twice: it goes to the "
                           "pruned set, marked as a duplicate (_dcDuplicate), so no particle "
                           "appears twice in a refinement. -1 (default): %.0f%% of the box, "
                           "about half a particle diameter for the usual box of 1.5-2 "
                           "diameters. 0 keeps duplicates." % (100 * DEFAULT_MIN_DISTANCE))
        form.addParam("thresholdMode", params.EnumParam, default=self.THRESHOLD_FIXED,
                      choices=["fixed", "automatic"], display=params.EnumParam.DISPLAY_HLIST,
                      label="Threshold",
                      help="'fixed' uses the value below. 'automatic' places the threshold "
                           "in the valley between the two modes of the OR set's score "
                           "distribution (Otsu's method), which needs no ground truth "
                           "and follows a classifier whose scores are shifted.")
        form.addParam("threshold", params.FloatParam, default=0.5,
                      condition="thresholdMode==%d" % self.THRESHOLD_FIXED,
                      label="Score threshold",
                      help="OR coordinates scoring at or above it are DC-retained, the "
                           "others DC-pruned. 0.5 is the natural cut of a balanced "
                           "classifier; changing it only re-creates the outputs.")

    # -------------------------- INSERT steps functions -----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.consensusStep, self.consensusRadius.get(),
                                 self._minVotes(), self._inputSignature(), needsGPU=False)
        self._insertFunctionStep(self.negativesStep, self.negativeRatio.get(),
                                 self.negativeDistance.get(), self.seed.get(),
                                 self._negativeSignature(), self.skipBadMicrographs.get(),
                                 self._offCentre(), needsGPU=False)
        self._insertFunctionStep(self.extractStep, self.networkSize.get(),
                                 self.invertContrast.get(), self.skipBadMicrographs.get(),
                                 needsGPU=False)
        rounds = self._rounds()
        for roundNumber in range(1, rounds + 1):
            self._insertFunctionStep(self.trainStep, roundNumber, rounds,
                                     ARCHITECTURES[self.architecture.get()],
                                     self.maxEpochs.get(), self.patience.get(),
                                     self.learningRate.get(), self.batchSize.get(),
                                     self.seed.get(), needsGPU=True)
            self._insertFunctionStep(self.scoreStep, roundNumber, rounds, needsGPU=True)
        self._insertFunctionStep(self.rankStep, self._combine(), needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, self.thresholdMode.get(),
                                 self.threshold.get(), self._minDistancePx(), needsGPU=False)

    # -------------------------- STEPS functions ------------------------------
    def consensusStep(self, radiusFraction, minVotes, inputSignature):
        sets = self._inputSets()
        reference = sets[0]
        refMics = convert.micrographsByName(reference.getMicrographs())
        refSampling = convert.samplingRate(reference)
        box = reference.getBoxSize()
        names = set(refMics)
        perSet = []
        for coordSet in sets:
            micsByName = convert.micrographsByName(coordSet.getMicrographs())
            names &= set(micsByName)
            idToName = {info[0]: name for name, info in micsByName.items()}
            perSet.append(convert.coordinatesByMicrograph(coordSet, idToName))
        common = sorted(names)
        micIds = {name: refMics[name][0] for name in common}
        pickers = []
        rescaled = []
        for pointer, coordSet, picks in zip(self.inputCoordinates, sets, perSet):
            sampling = convert.samplingRate(coordSet)
            if sampling and refSampling and abs(sampling - refSampling) > 1e-6:
                rescaled.append("%s (%.3f A/px)" % (self._setName(pointer), sampling))
                picks = {n: rescale(xy, sampling, refSampling) for n, xy in picks.items()}
            pickers.append({micIds[n]: picks[n] for n in common if n in picks})

        table = pipeline.consensus_table(pickers, radiusFraction * box)
        table.save(self._path("consensus.npz"))
        self._writeJson("micrographs.json",
                        {str(micIds[n]): [n, refMics[n][1], refMics[n][2]] for n in common})
        votes = table.votes
        ignored = sum(len(m) for m in (convert.micrographsByName(s.getMicrographs())
                                       for s in sets)) - len(common) * len(sets)
        otherBoxes = sorted({s.getBoxSize() for s in sets[1:]} - {box})
        self._updateInfo(nPickers=len(sets), box=box, otherBoxSizes=otherBoxes,
                         samplingRate=refSampling,
                         minVotes=minVotes, radiusPx=radiusFraction * box,
                         nMicrographs=len(common), ignoredMicrographEntries=ignored,
                         rescaledSets=rescaled, nOr=len(table),
                         nAnd=int((votes >= minVotes).sum()),
                         votesHistogram=np.bincount(votes, minlength=len(sets) + 1).tolist(),
                         pickerCounts=[int(c) for c in table.voters.sum(axis=0)])
        self.info("Consensus of %d pickers on %d micrographs: OR %d, AND (>= %d votes) %d"
                  % (len(sets), len(common), len(table), minVotes, (votes >= minVotes).sum()))

    def negativesStep(self, ratio, distanceFraction, seed, negativeSignature, skipBad,
                      offCentre):
        info = self._readInfo()
        table = pipeline.CoordinateTable.load(self._path("consensus.npz"))
        shapes = {}
        for micId, (_, path, _) in self._micrographs().items():
            try:
                shapes[micId] = extraction.micrograph_shape(path)
            except extraction.MicrographError as error:
                if not skipBad:
                    raise
                self.warning("No negatives from %s (extraction will skip it)" % error)
        box = info["box"]
        total = int(round(ratio * info["nAnd"]))
        negatives = pipeline.negatives_table(table, shapes, box, total,
                                             distanceFraction * box, seed)
        nRandom = len(negatives)
        parts = [negatives]
        nOffCentre = 0
        if offCentre:
            positives = table.subset(np.flatnonzero(table.votes >= info["minVotes"]))
            shifted = pipeline.offcentre_table(positives, table, shapes, OFFCENTRE_SHIFT * box,
                                               OFFCENTRE_CLEARANCE * box, seed + 1)
            parts.append(shifted)
            nOffCentre = len(shifted)
        userNegatives = self.inputNegativeCoordinates.get()
        if userNegatives is not None:
            parts.append(self._userNegatives(userNegatives, info))
        negatives = pipeline.merge_tables(*parts)
        negatives.save(self._path("negatives.npz"))
        nUser = len(negatives) - nRandom - nOffCentre
        self._updateInfo(nNegRandom=nRandom, nNegOffCentre=nOffCentre, nNegUserCoords=nUser)
        self.info("Negatives: %d random, %d off-centre, %d given as coordinates"
                  % (nRandom, nOffCentre, nUser))

    def extractStep(self, size, invert, skipBad):
        info = self._readInfo()
        paths = {micId: info[1] for micId, info in self._micrographs().items()}
        box = info["box"]
        table = pipeline.CoordinateTable.load(self._path("consensus.npz"))
        negatives = pipeline.CoordinateTable.load(self._path("negatives.npz"))
        userParticles = self.inputNegativeParticles.get()
        nUser = userParticles.getSize() if userParticles is not None else 0

        self.info("Extracting %d OR particles (box %d px -> %d px)" % (len(table), box, size))
        orStack = create_stack(self._path("or_particles.npy"), len(table), size)
        report = extraction.extract_to_stack(pipeline.extraction_jobs(table, paths), orStack,
                                             box, invert, skipBad)
        orStack.close()
        self.info("Extracting %d negative particles" % (len(negatives) + nUser))
        negStack = create_stack(self._path("neg_particles.npy"), len(negatives) + nUser, size)
        negReport = extraction.extract_to_stack(pipeline.extraction_jobs(negatives, paths),
                                                negStack, box, invert, skipBad)
        if nUser:
            self._readUserParticles(userParticles, negStack, len(negatives), size, invert)
        negStack.close()
        skipped = sorted(set(report.skipped_micrographs) | set(negReport.skipped_micrographs))
        skippedIds = [micId for micId, path in paths.items() if path in skipped]
        self._updateInfo(networkSize=size, nCrossingBorder=report.n_crossing_border,
                         skippedMicrographs=skipped, skippedMicIds=skippedIds,
                         nNegUserParticles=nUser, extractionSeconds=report.seconds)

    def trainStep(self, roundNumber, rounds, architecture, maxEpochs, patience, learningRate,
                  batchSize, seed):
        """Train one round: AND vs NEG; a second round adds the first round's confident
        decisions on the OR set (particles to the positives, junk to the negatives)."""
        from ..core.training import TrainingConfig, train_classifier

        info = self._readInfo()
        table = pipeline.CoordinateTable.load(self._path("consensus.npz"))
        negatives = pipeline.CoordinateTable.load(self._path("negatives.npz"))
        usable = ~np.isin(table.mic, info["skippedMicIds"])
        isAnd = table.votes >= info["minVotes"]
        positives = np.flatnonzero(usable & isAnd)
        if len(positives) < MIN_POSITIVES:
            raise ValueError(
                "Only %d coordinates were picked by at least %d pickers (the AND set): too few "
                "to train on (at least %d are needed). Use 'picked by at least k pickers' "
                "with a lower k, a larger consensus radius, or check that the input sets "
                "are on the same micrographs and pixel size."
                % (len(positives), info["minVotes"], MIN_POSITIVES))
        orStack = open_stack(self._path("or_particles.npy"))
        negStack = open_stack(self._path("neg_particles.npy"))
        negUsable = np.concatenate([~np.isin(negatives.mic, info["skippedMicIds"]),
                                    np.ones(info["nNegUserParticles"], dtype=bool)])
        negativeSources = [(negStack, np.flatnonzero(negUsable))]
        hard = np.empty(0, dtype=np.int64)
        if roundNumber > 1:
            posterior, _ = self._agreement(np.load(self._roundPath("cnn_scores.npy", 1, rounds)),
                                           table)
            positives, hard = pipeline.self_training_rows(posterior, isAnd, usable,
                                                          SELF_TRAINING_CONFIDENCE)
            negativeSources.append((orStack, hard))
            self.info("Round %d trains on %d particles (%d beyond the AND set) and %d picks "
                      "the first round judged junk" % (roundNumber, len(positives),
                                                       int((~isAnd[positives]).sum()), len(hard)))
        config = TrainingConfig(architecture=architecture, max_epochs=maxEpochs,
                                patience=patience, lr_patience=max(1, patience // 2),
                                learning_rate=learningRate, batch_size=batchSize,
                                seed=seed + 7 * (roundNumber - 1))
        result = train_classifier([(orStack, positives)], negativeSources, config,
                                  self._roundPath("model.keras", roundNumber, rounds),
                                  self._roundPath("history.csv", roundNumber, rounds),
                                  gpus=self._gpus())
        trained = {"round": roundNumber, "epochs": result.epochs,
                   "valAccuracy": result.val_accuracy, "valLoss": result.val_loss,
                   "seconds": result.seconds, "nPositives": len(positives),
                   "nHardNegatives": len(hard)}
        history = [r for r in info.get("rounds", []) if r["round"] != roundNumber]
        self._updateInfo(architecture=architecture, epochs=result.epochs,
                         valAccuracy=result.val_accuracy, valLoss=result.val_loss,
                         trainingSeconds=sum(r["seconds"] for r in history) + result.seconds,
                         nTrainPositives=len(positives), nRounds=rounds,
                         rounds=sorted(history + [trained], key=lambda r: r["round"]))

    def scoreStep(self, roundNumber, rounds):
        from ..core.scoring import score_stack

        info = self._readInfo()
        scores = score_stack(self._roundPath("model.keras", roundNumber, rounds),
                             open_stack(self._path("or_particles.npy")),
                             gpus=self._gpus(), seed=self.seed.get())
        table = pipeline.CoordinateTable.load(self._path("consensus.npz"))
        scores[np.isin(table.mic, info["skippedMicIds"])] = np.nan
        self._saveArray(self._roundPath("cnn_scores.npy", roundNumber, rounds), scores)

    def rankStep(self, combine):
        """The final score: the network's, or its combination with the pickers' agreement."""
        table = pipeline.CoordinateTable.load(self._path("consensus.npz"))
        cnn = np.load(self._path("cnn_scores.npy"))
        if combine:
            scores, model = self._agreement(cnn, table)
            agreement = {"sensitivity": model.sensitivity.tolist(),
                         "falsePickRate": model.false_pick_rate.tolist(),
                         "prior": model.prior}
        else:
            scores, agreement = cnn, None
        self._saveArray(self._path("scores.npy"), scores)
        self._updateInfo(autoThreshold=automatic_threshold(scores), agreement=agreement)

    def createOutputStep(self, thresholdMode, threshold, minDistancePx):
        self._updateInfo(minDistancePx=minDistancePx)
        results = RunResults(self._getExtraPath())
        if thresholdMode == self.THRESHOLD_AUTOMATIC:
            threshold = results.autoThreshold
        split = registerSplit(self, self, results, threshold)
        self._updateInfo(threshold=threshold, thresholdMode=["fixed", "automatic"][thresholdMode],
                         nRetained=len(split.retained), nPruned=len(split.pruned),
                         nDuplicates=split.n_duplicates)

    # -------------------------- INFO functions -------------------------------
    def _validate(self):
        errors = []
        pointers = list(self.inputCoordinates)
        if len(pointers) < 2:
            errors.append("Deep consensus needs the coordinates of at least two pickers; "
                          "%d set(s) given." % len(pointers))
        sets = [p.get() for p in pointers]
        for i, (pointer, coordSet) in enumerate(zip(pointers, sets), 1):
            if coordSet is None:
                errors.append("Input coordinate set %d is not available." % i)
            elif coordSet.getSize() == 0:
                errors.append("Input coordinate set %s is empty." % self._setName(pointer))
        if errors:  # the sets cannot be compared; the parameters can, in the same round
            return errors + self._validateRanges(len(pointers))
        box = sets[0].getBoxSize()
        if not box or box < 8:
            errors.append("The box size of %s is %s: set it (at least 8 px) when picking."
                          % (self._setName(pointers[0]), box))
        names = [set(convert.micrographsByName(s.getMicrographs())) for s in sets]
        if not set.intersection(*names):
            errors.append("The input sets share no micrograph (matched by name): %s."
                          % ", ".join(self._setName(p) for p in pointers))
        errors += self._validateKnownNegatives(pointers, sets)
        errors += self._validateRanges(len(sets))
        return errors

    def _validateKnownNegatives(self, pointers, sets):
        """Refuse known negatives that are an input set or sit on an input set's picks.

        Trained as negatives, a picker's particles teach the network that
        particles are background.  More than half of the known negatives on the
        micrographs they share with an input set (matched by name, rescaled to
        the first set's pixel size) within the consensus radius of its picks
        is a picker's output, not ice or carbon.
        """
        negPointer = self.inputNegativeCoordinates
        known = negPointer.get()
        if known is None:
            return []
        if known.getSize() == 0:
            return ["The known negatives %s are empty." % self._setName(negPointer)]
        refSampling = convert.samplingRate(sets[0])
        radius = self.consensusRadius.get() * (sets[0].getBoxSize() or 0)  # no box: refused
        knownMics = convert.micrographsByName(known.getMicrographs())
        errors = []
        for pointer, coordSet in zip(pointers, sets):
            if known.getFileName() == coordSet.getFileName():
                errors.append("The known negatives %s are the input set %s: known negatives "
                              "must be non-particles (ice, carbon, contamination), not a "
                              "picker's particles." % (self._setName(negPointer),
                                                       self._setName(pointer)))
                continue
            mics = convert.micrographsByName(coordSet.getMicrographs())
            shared = set(knownMics) & set(mics)
            if not shared:
                continue
            knownXy = self._picksOn(known, {n: knownMics[n] for n in shared}, refSampling)
            picks = self._picksOn(coordSet, {n: mics[n] for n in shared}, refSampling)
            nShared, fraction = fraction_on_picks(knownXy, picks, radius)
            if fraction > 0.5:
                errors.append("%d of the %d known negatives %s on the micrographs they share "
                              "with the input set %s lie within the consensus radius of its "
                              "picks: they are particles, not the non-particles (ice, carbon, "
                              "contamination) known negatives must be."
                              % (round(fraction * nShared), nShared,
                                 self._setName(negPointer), self._setName(pointer)))
        return errors

    @staticmethod
    def _picksOn(coordSet, mics, refSampling):
        """name -> x/y of a set's picks on ``mics`` (name -> (micId, ...)), at refSampling."""
        picks = convert.coordinatesByMicrograph(
            coordSet, {info[0]: name for name, info in mics.items()}, onlyThese=True)
        sampling = convert.samplingRate(coordSet)
        if sampling and refSampling:
            picks = {n: rescale(xy, sampling, refSampling) for n, xy in picks.items()}
        return picks

    def _validateRanges(self, nSets):
        """One message per parameter out of range; a parameter hidden by its form
        condition (k, the fixed threshold) is unused and not checked."""
        checks = [
            (0 < self.consensusRadius.get() <= 1, "Consensus radius must be in (0, 1]."),
            (not self.evalParamCondition("minVotes") or 1 <= self.minVotes.get() <= nSets,
             "k must be between 1 and the number of input sets (%d)." % nSets),
            (self.negativeRatio.get() > 0, "Negatives per positive must be positive."),
            (0 <= self.negativeDistance.get() <= 2,
             "Exclusion distance must be in [0, 2] boxes."),
            (16 <= self.networkSize.get() <= 512, "Network box size must be in [16, 512] px."),
            (self.maxEpochs.get() >= 1, "Maximum epochs must be at least 1."),
            (self.patience.get() >= 1, "Early-stopping patience must be at least 1."),
            (0 < self.learningRate.get() < 1, "Learning rate must be in (0, 1)."),
            (self.batchSize.get() >= 2, "Batch size must be at least 2."),
            (not self.evalParamCondition("threshold") or 0 <= self.threshold.get() <= 1,
             "Score threshold must be in [0, 1]."),
            (self.minDistance.get() == -1 or self.minDistance.get() >= 0,
             "Minimum distance between particles must be -1 (automatic) or at least 0 A."),
        ]
        return [message for ok, message in checks if not ok]

    def _summary(self):
        return summaryLines(self._readInfo())

    def _methods(self):
        info = self._readInfo()
        if "nRetained" not in info:
            return ["Deep Consensus has not produced outputs yet."]
        text = ("The coordinates of %d pickers were pruned with Deep Consensus "
                "[SanchezGarcia2018]: a %s convolutional network trained on the %d "
                "coordinates picked by at least %d pickers (radius %.1f px) against %d "
                "negative boxes (%d of them off-centre on particles) scored the %d "
                "coordinates picked by any"
                % (info["nPickers"], info["architecture"], info["nAnd"], info["minVotes"],
                   info["radiusPx"], info["nNegRandom"] + info.get("nNegOffCentre", 0)
                   + info["nNegUserCoords"] + info["nNegUserParticles"],
                   info.get("nNegOffCentre", 0), info["nOr"]))
        if info.get("nRounds", 1) > 1:
            text += (", retrained once with the first round's confident decisions as extra "
                     "particles and negatives")
        if info.get("agreement"):
            text += ("; its score was combined with the pickers' votes, each picker weighted "
                     "by its reliability estimated by EM (Dawid and Skene, 1979)")
        text += ("; %d coordinates with a score of at least %.2f were kept"
                 % (info["nRetained"], info["threshold"]))
        if info.get("minDistancePx"):
            text += (", none closer than %.0f px to a better-scored one"
                     % info["minDistancePx"])
        return [text + "."]

    def _citations(self):
        return ["SanchezGarcia2018"]

    # -------------------------- UTILS functions ------------------------------
    def _minVotes(self):
        nSets = len(self.inputCoordinates)
        rule = self.andRule.get()
        if rule == self.AND_ALL:
            return nSets
        if rule == self.AND_MAJORITY:
            return nSets // 2 + 1
        return self.minVotes.get()

    def _usesAgreementMethod(self):
        return self.method.get() == self.METHOD_AGREEMENT

    def _offCentre(self):
        return self._usesAgreementMethod() and self.offCentreNegatives.get()

    def _rounds(self):
        return 2 if self._usesAgreementMethod() and self.selfTraining.get() else 1

    def _combine(self):
        return self._usesAgreementMethod() and self.combineVotes.get()

    def _minDistancePx(self):
        """The minimum distance in pixels of the first input set (default: a share of the box)."""
        box = self._inputSets()[0].getBoxSize() or 0
        if self.minDistance.get() < 0:
            return DEFAULT_MIN_DISTANCE * box
        sampling = convert.samplingRate(self._inputSets()[0]) or 1.0
        return self.minDistance.get() / sampling

    def _roundPath(self, name, roundNumber, rounds):
        """A round's file; the last round's is the run's (model.keras, history.csv, ...)."""
        if roundNumber == rounds:
            return self._path(name)
        root, ext = os.path.splitext(name)
        return self._path("%s_round%d%s" % (root, roundNumber, ext))

    def _saveArray(self, path, values):
        tmp = path + ".tmp.npy"
        np.save(tmp, values)
        os.replace(tmp, path)

    def _agreement(self, cnnScores, table):
        """Posterior of the pickers' votes and the network's score (core.agreement)."""
        return dawid_skene(table.voters, score_logit(cnnScores))

    def _inputSets(self):
        return [pointer.get() for pointer in self.inputCoordinates]

    def _inputSignature(self):
        return ";".join("%s:%s" % (self._setName(p), p.get().getSize())
                        for p in self.inputCoordinates)

    def _negativeSignature(self):
        parts = [(self.inputNegativeCoordinates, "coordinates"),
                 (self.inputNegativeParticles, "particles")]
        return ";".join("%s=%s:%d" % (kind, self._setName(p), p.get().getSize())
                        for p, kind in parts if p.get() is not None)

    @staticmethod
    def _setName(pointer):
        """A readable name for an input: the run that made it and the output's name."""
        producer = pointer.getObjValue()
        if isinstance(producer, Protocol):
            return "'%s' (%s)" % (producer.getObjLabel() or producer.getRunName(),
                                  pointer.getExtended() or "output")
        obj = pointer.get()
        if obj is None:
            return "None"
        return "'%s' (id %s)" % (obj.getObjLabel() or obj.getClassName(), obj.getObjId())

    def _gpus(self):
        return self.getGpuList() if self.usesGpu() else []

    def _path(self, name):
        return self._getExtraPath(name)

    def _micrographs(self):
        return {int(k): tuple(v) for k, v in self._readJson("micrographs.json").items()}

    def _readJson(self, name):
        path = self._path(name)
        if not os.path.exists(path):
            return {}
        with open(path) as handle:
            return json.load(handle)

    def _writeJson(self, name, data):
        tmp = self._path(name + ".tmp")
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=1)
        os.replace(tmp, self._path(name))

    def _readInfo(self):
        return self._readJson("info.json")

    def _updateInfo(self, **values):
        info = self._readInfo()
        info.update(values)
        self._writeJson("info.json", info)

    def _userNegatives(self, userSet, info):
        """Known-negative coordinates, mapped to the reference micrographs and pixel size."""
        byName = {info[0]: micId for micId, info in self._micrographs().items()}
        theirs = convert.micrographsByName(userSet.getMicrographs())
        idToName = {info[0]: name for name, info in theirs.items()}
        picks = convert.coordinatesByMicrograph(userSet, idToName)
        sampling = convert.samplingRate(userSet)
        factor = (sampling or info["samplingRate"]) / (info["samplingRate"] or 1.0)
        known = {byName[n]: xy * factor for n, xy in picks.items() if n in byName}
        return pipeline.CoordinateTable.from_picks(known)

    def _readUserParticles(self, particles, stack, offset, size, invert, chunk=5000):
        """Known-negative particle images into the end of the negative stack, in chunks."""
        items = [(p.getIndex() or 1, p.getFileName()) for p in particles.iterItems()]
        for first in range(0, len(items), chunk):
            images = extraction.read_particle_images(items[first:first + chunk], size, invert)
            stack[offset + first:offset + first + len(images)] = images
        self.info("Added %d known negative particles" % len(items))
