"""ProtDeepConsensus: prune false-positive picks with consensus and a CNN.

The protocol only maps Scipion objects to the core (``deepconsensus_plugin.core``)
and back.  Each stage keeps its result in the run's ``extra/`` folder and
receives the parameters it depends on, so that "continue" re-runs only the
stages after the first changed parameter (a new threshold re-creates only
the outputs; new training settings reuse consensus and extraction).
"""
import hashlib
import os
import shlex
import uuid

import pyworkflow.protocol.params as params
from pwem.protocols import ProtParticles
from pyworkflow import BETA
from pyworkflow.protocol import STEPS_PARALLEL, Protocol
from pyworkflow.utils import Message

from .. import convert
from ..results import RunResults
from ..core import box_policy, centring, pipeline, run_folder, run_summary, shards, stages
from ..core.model import ARCHITECTURES, DEFAULT_SIZE
from ..core.model_file import ModelFileError, read_spec
from ..core.run_folder import KnownParticles, RunFolder, RunFolderError
from ..core.selection import DEFAULT_EDGE_MARGIN, DEFAULT_MIN_DISTANCE
from ..core.streaming import stream_summary
from ..core.stages import OFFCENTRE_CLEARANCE, OFFCENTRE_SHIFT, SELF_TRAINING_CONFIDENCE
from .outputs import POSSIBLE_OUTPUTS, registerSplit
from .streaming import DeepConsensusStreaming
from .validation import DeepConsensusValidation


GPU_PLACEHOLDER = '"%(GPU)s"'
"""runJob replaces it with the GPU ids Scipion booked for the step (space-separated)."""


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


class ProtDeepConsensus(DeepConsensusValidation, DeepConsensusStreaming, ProtParticles):
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
    # the shards of a stage run side by side; with open inputs, a step generator beside
    # the batch steps (protocols/streaming.py)
    stepsExecutionMode = STEPS_PARALLEL

    AND_ALL = 0
    AND_AT_LEAST = 1
    AND_MAJORITY = 2
    THRESHOLD_FIXED = 0
    THRESHOLD_AUTOMATIC = 1
    METHOD_AGREEMENT = 0
    METHOD_PAPER = 1
    MODEL_NEW = 0
    MODEL_RUN = 1
    MODEL_FILE = 2
    USE_FINE_TUNE = 0
    USE_SCORE_ONLY = 1

    # -------------------------- DEFINE param functions -----------------------
    def _addAgreementOption(self, form, name, label, help):
        """A yes/no step of the agreement method, on by default, advanced, and hidden
        when the published method is chosen (it switches them all off)."""
        form.addParam(name, params.BooleanParam, default=True,
                      condition="method==%d" % self.METHOD_AGREEMENT,
                      expertLevel=params.LEVEL_ADVANCED, label=label, help=help)

    def _defineParams(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam("inputCoordinates", params.MultiPointerParam,
                      pointerClass="SetOfCoordinates", important=True,
                      label="Input coordinates (two or more pickers)",
                      help="The coordinate sets of two or more pickers on the same "
                           "micrographs. Micrographs are matched by name; box size and "
                           "pixel size are taken from the first set, and the others are "
                           "rescaled to it.")
        form.addParam("particleDiameter", params.FloatParam, default=0,
                      label="Particle diameter (Å)",
                      help="0: the run works in the box of the first input set, and its "
                           "distances (consensus radius, negatives, the network's view, "
                           "minimum distance, edge margin) are shares of that box, as in "
                           "the paper; where that box exceeds %.0f times the median "
                           "distance between neighbouring AND coordinates (at least about a "
                           "diameter, since particles do not overlap), a run that trains "
                           "its network works in boxes of %.1f such distances instead. Give "
                           "the particle's largest diameter to choose the box: the run then "
                           "works in boxes of %.1f diameters, the particle and a ring of "
                           "background. The outputs keep the input box. In a crowded field "
                           "a large box lets the neighbours into the network's view, and "
                           "the minimum distance and edge margin grow with the box: on "
                           "EMPIAR-10017 a box of 3.6 such distances lowered F1 from 0.90 "
                           "to 0.69, and on EMPIAR-10028 (ribosomes) one of 2.9 from 0.85 "
                           "to 0.77. A streaming run measures that distance on its first "
                           "batch, and the wizard measures it on the input sets and proposes "
                           "it as the diameter. A run that reuses a network works in the "
                           "boxes the network was trained in: leave the diameter at 0 there."
                           % (box_policy.CROWDED_BOX_PER_SPACING, box_policy.BOX_PER_DIAMETER,
                              box_policy.BOX_PER_DIAMETER))
        form.addParam("method", params.EnumParam, default=self.METHOD_AGREEMENT,
                      choices=["network and picker agreement", "as published (2018)"],
                      display=params.EnumParam.DISPLAY_HLIST, label="Method",
                      help="'network and picker agreement' (recommended): the network "
                           "also learns from boxes shifted off the particles' centres, and a "
                           "second network from what the pickers picked by mistake, as judged "
                           "by the first; it scores each pick at its best-centred box, adds "
                           "what each box's rotational average says, and that score is then "
                           "combined with how reliable each picker proved "
                           "to be (estimated from how often the others confirm its picks, no "
                           "ground truth needed). 'as published' reproduces Sanchez-Garcia et "
                           "al. (2018): random negatives, one round, each pick's own box, the "
                           "network's score alone, no rotational averages (for the "
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
                           "centring error of pickers without merging neighbours. "
                           "Closest pairs are joined first, so the order of the "
                           "input sets does not change the result.")
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
        self._addAgreementOption(
            form, "offCentreNegatives", "Off-centre negatives?",
            "Add one negative per AND particle, centred %.0f%% of the box away "
            "from it (and %.0f%% from every pick): a box showing a particle's "
            "edge. The network then learns 'a particle at the centre' rather "
            "than 'a particle somewhere in the box', so badly centred picks, the "
            "second pick of a particle and boxes that catch a neighbour score "
            "low. It matters most where particles crowd in a large box: on the "
            "ribosome benchmark in boxes of 2 particle diameters F1 0.851 with "
            "them and 0.795 without; in the pickers' own boxes the two differ "
            "by less than the spread between seeds. With about two negatives "
            "per AND particle instead of one, each training epoch takes about "
            "twice as long. The published method has none."
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
                           "classes). Each is cut to the run's box (its width in Å, at the "
                           "particles' pixel size), resized to the network size and added "
                           "to the negatives, so extract them with at least that box. "
                           "Particles whose contrast is the opposite of the micrographs' "
                           "(RELION and Xmipp invert it on extraction by default) are "
                           "inverted back; the summary says so.")

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

        self._defineModelParams(form)

        form.addSection(label="Training")
        form.addParam("architecture", params.EnumParam, default=0,
                      choices=list(ARCHITECTURES), display=params.EnumParam.DISPLAY_HLIST,
                      label="Network",
                      help="'fast' is a lean network that matches the paper's accuracy at "
                           "a small fraction of the cost; 'paper' is the network of the "
                           "original publication (Table 1).")
        self._addAgreementOption(
            form, "selfTraining", "Second round on confident decisions?",
            "Train a second network after the first: OR coordinates whose "
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
        form.addParam("epochParticles", params.IntParam,
                      default=stages.TrainingParams.epoch_particles,
                      expertLevel=params.LEVEL_ADVANCED, label="Boxes of each class per epoch",
                      help="An epoch shows the network at most this many particles and as "
                           "many negatives; on a larger dataset the next ones are taken in "
                           "turn in later epochs, so that every box is used, and at most a "
                           "fifth of this is held out per class for validation. The early "
                           "stopping and the learning-rate drop count epochs, so this keeps "
                           "the training time of a large dataset from growing with it. "
                           "0: every box in every epoch, as in the paper (the time grows "
                           "with the data).")
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
        self._addAgreementOption(
            form, "combineVotes", "Combine with picker agreement?",
            "The score is the probability that a coordinate is a particle "
            "given the network's score and which pickers picked it, each "
            "picker weighted by its sensitivity and false-pick rate as "
            "estimated by EM (Dawid-Skene) from the data. 'No' scores with "
            "the network alone.")
        self._addAgreementOption(
            form, "bestCentred", "Score the best-centred box?",
            "Score each coordinate as the best of its own box and the %d "
            "boxes %.0f%% of the box around it. A particle one picker "
            "picked a few pixels off-centre is then judged as it looks "
            "centred, not pruned for its offset; a box on background beside "
            "a particle is too far to reach it. The coordinates themselves "
            "do not move. Costs %d times the final scoring (the shifted "
            "boxes are cut from the micrographs again, not stored)."
            % (centring.DIRECTIONS, 100 * centring.DEFAULT_SEARCH,
               centring.boxes_per_pick(centring.DEFAULT_SEARCH)))
        self._addAgreementOption(
            form, "rotationalAverage", "Add the boxes' rotational averages?",
            "Judge each box a second way besides the network: the average of "
            "its whitened image over each ring around its centre (what "
            "every view of a particle shares, with the noise averaged over "
            "the ring), through a linear discriminant fitted on the same AND "
            "boxes and negatives as the network. Its log-odds are added to "
            "the network's in the picker agreement, which helps most with "
            "faint particles that one picker found. Costs seconds.")
        form.addParam("minDistance", params.FloatParam, default=-1,
                      label="Minimum distance between particles (A)",
                      help="A retained coordinate closer than this to a better-scored "
                           "retained one is the same particle picked twice: it goes to the "
                           "pruned set, marked as a duplicate (_dcDuplicate), so no particle "
                           "appears twice in a refinement. -1 (default): %.0f%% of the box, "
                           "about half a particle diameter for the usual box of 1.5-2 "
                           "diameters. 0 keeps duplicates." % (100 * DEFAULT_MIN_DISTANCE))
        form.addParam("edgeMargin", params.FloatParam, default=-1,
                      label="Edge margin (A)",
                      help="A coordinate closer than this to its micrograph's edge is a "
                           "particle cut by the edge (or the edge itself, which some "
                           "pickers pick): its box is partly outside the micrograph and it "
                           "cannot be extracted whole, so it goes to the pruned set, marked "
                           "as at the edge (_dcAtEdge). The edge is that of the "
                           "micrograph's data: a padded border (rows or columns repeating "
                           "their neighbour, or a constant fill, where motion correction "
                           "shifted the frames) is found in each file and counts as outside "
                           "(the network sees it blank). -1 (default): %.0f%% of the box, "
                           "about a particle radius. 0 keeps them."
                           % (100 * DEFAULT_EDGE_MARGIN))
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

        self._defineEvaluationParams(form)
        self._defineStreamingParams(form)
        form.addParallelSection(threads=1, mpi=0)
        form.addParam("jobsPerStage", params.IntParam, default=1,
                      label="Jobs per stage",
                      help="Extraction (by micrographs) and scoring (by particles) are cut "
                           "into this many jobs; training is one job. Scipion runs as many "
                           "jobs at once as threads minus one, or, with a queue that takes "
                           "one job per step (QUEUE_FOR_JOBS), submits each as a cluster "
                           "job. The jobs merge exactly: the same scores for any number.")

    def _defineModelParams(self, form):
        """The Model section: train a new network, or reuse one (issue 14)."""
        form.addSection(label="Model")
        form.addParam("modelSource", params.EnumParam, default=self.MODEL_NEW,
                      choices=["train a new model", "model of a previous run", "model file"],
                      display=params.EnumParam.DISPLAY_HLIST, label="Network",
                      help="'train a new model' (default) learns from this data alone. A "
                           "model from an earlier collection of the same sample (a previous "
                           "deep-consensus run, or the model.keras file such a run left in "
                           "its extra folder) can be fine-tuned on this data, which needs "
                           "fewer particles and epochs, or score it as it is. The model must "
                           "have been trained on the same kind of boxes: network box size, "
                           "contrast and network are checked, and the run works in boxes of "
                           "the size in A the network was trained in (whatever the input "
                           "box, which the outputs keep), unless a particle diameter is "
                           "given, which must then give the same boxes.")
        form.addParam("modelRun", params.PointerParam, pointerClass="ProtDeepConsensus",
                      allowsNull=True, condition="modelSource==%d" % self.MODEL_RUN,
                      label="Previous deep-consensus run",
                      help="A finished deep-consensus run whose final network is reused.")
        form.addParam("modelFile", params.FileParam, default="",
                      condition="modelSource==%d" % self.MODEL_FILE, label="Model file",
                      help="A model.keras file written by a deep-consensus run (Scipion's "
                           "or the deepconsensus command's); it records the boxes it was "
                           "trained on.")
        form.addParam("modelUse", params.EnumParam, default=self.USE_FINE_TUNE,
                      choices=["fine-tune on this data", "score only (no training)"],
                      display=params.EnumParam.DISPLAY_HLIST,
                      condition="modelSource!=%d" % self.MODEL_NEW, label="Use it to",
                      help="'fine-tune' trains the reused network further on this data "
                           "(the training section's rounds and epochs). 'score only' scores "
                           "every coordinate with it as it is: no training at all, and the "
                           "AND set may be small.")

    def _defineEvaluationParams(self, form):
        """The Evaluation section: the scores against what the user knows (issue 14)."""
        form.addSection(label="Evaluation")
        form.addParam("knownGoodCoordinates", params.PointerParam,
                      pointerClass=notPrefilled("SetOfCoordinates"), allowsNull=True,
                      label="Known good picks (optional)",
                      help="Coordinates you know are particles (e.g. a few hundred picked by "
                           "hand) on some of the micrographs. They do not train the network: "
                           "the summary and the viewer report how many of those the pickers "
                           "picked are retained (recall), what share of the retained known "
                           "picks are good (precision, with known bad picks) and how well the "
                           "scores rank good above bad (ROC-AUC), so that you can trust a "
                           "threshold. Matched to the picks within the consensus radius.")
        form.addParam("knownBadCoordinates", params.PointerParam,
                      pointerClass=notPrefilled("SetOfCoordinates"), allowsNull=True,
                      label="Known bad picks (optional)",
                      help="Coordinates you know are not particles (ice, carbon, "
                           "aggregates, empty background) where the pickers picked; see "
                           "above. Unlike the known negatives, they do not train the network.")

    # -------------------------- INSERT steps functions -----------------------
    def _insertAllSteps(self):
        """The heavy stages (extraction, training, scoring) are jobs of ``deepconsensus
        job`` in the plugin's environment (``runJob``), cut into shards; the light ones
        (consensus, negatives, merging the scores, ranking, outputs) run here."""
        if self._inputsOpen():
            self._insertStreamingSteps()
            return
        jobs = self.jobsPerStage.get()
        size, invert = self.networkSize.get(), self.invertContrast.get()
        skipBad = self.skipBadMicrographs.get()
        # pyworkflow's continue re-runs a step whose own arguments changed, not the steps
        # after it: every step after the first also gets the signature of all the
        # parameters before it (upstream), so that a change re-runs everything it feeds.
        upstream = _Chain()
        # GPU steps wait for a free GPU slot of Scipion's executor: CPU runs claim none, so
        # that their scoring shards run side by side
        gpu = self.usesGpu()
        self._insertFunctionStep(self.checkEnvironmentStep, needsGPU=gpu)
        consensus = (self.consensusRadius.get(), self._minVotes(), self._inputSignature(),
                     self.particleDiameter.get(), self._fitBox(),
                     self._networkBox(self._inputSets()[0]))
        self._insertFunctionStep(self.consensusStep, *consensus, needsGPU=False)
        negatives = (self.negativeRatio.get(), self.negativeDistance.get(), self.seed.get(),
                     self._negativeSignature(), skipBad, self._offCentre())
        negativesStep = self._insertFunctionStep(
            self.negativesStep, *negatives, upstream.after(consensus), needsGPU=False)
        extraction = (size, invert, skipBad)
        rotational = self._rotational()  # fitted by the merge: the shards do not depend on it
        upstream.after(negatives)
        shardSteps = [self._insertFunctionStep(self.extractStep, shard, jobs, *extraction,
                                               upstream.key, prerequisites=[negativesStep],
                                               needsGPU=False)
                      for shard in range(1, jobs + 1)]
        previous = self._insertFunctionStep(self.mergeExtractionStep, jobs, *extraction,
                                            rotational, self._negativeSignature(),
                                            upstream.key, prerequisites=shardSteps,
                                            needsGPU=False)
        model = self._modelChoice()
        previous = self._insertFunctionStep(self.modelStep, *model,
                                            upstream.after(extraction + (rotational, jobs)),
                                            prerequisites=[previous], needsGPU=False)
        upstream.after(model)
        rounds = self._rounds()
        search = self._centringSearch()  # the final round's scoring only
        for roundNumber in range(1, rounds + 1) if not self._scoreOnly() else ():
            training = (roundNumber, rounds, ARCHITECTURES[self.architecture.get()],
                        self.maxEpochs.get(), self.patience.get(), self.learningRate.get(),
                        self.batchSize.get(), self.seed.get(), self.epochParticles.get())
            trained = self._insertFunctionStep(self.trainStep, *training, upstream.key,
                                               prerequisites=[previous], needsGPU=gpu)
            previous = self._insertScoring(roundNumber, rounds, jobs,
                                           search if roundNumber == rounds else 0.0,
                                           upstream.after(training), trained, gpu)
        if self._scoreOnly():  # the reused network as it is: round 1 of 1, no training
            previous = self._insertScoring(1, 1, jobs, search, upstream.key, previous, gpu)
        combine = self._combine()
        self._insertFunctionStep(self.rankStep, combine, upstream.after((search,)),
                                 prerequisites=[previous], needsGPU=False)
        split = (self.thresholdMode.get(), self.threshold.get(), self.minDistance.get(),
                 self.edgeMargin.get())
        self._insertFunctionStep(self.createOutputStep, *split,
                                 upstream.after((combine,)), needsGPU=False)
        self._insertFunctionStep(self.evaluateStep, self._knownSignature(),
                                 upstream.after(split), needsGPU=False)

    def _insertScoring(self, roundNumber, rounds, jobs, search, upstream, trained, gpu):
        """A round's scoring shards and their merge (the final round's with the
        best-centred search); the merge step's id."""
        shardSteps = [self._insertFunctionStep(self.scoreStep, roundNumber, rounds, shard,
                                               jobs, search, upstream, prerequisites=[trained],
                                               needsGPU=gpu)
                      for shard in range(1, jobs + 1)]
        return self._insertFunctionStep(self.mergeScoresStep, roundNumber, rounds, jobs,
                                        search, upstream, prerequisites=shardSteps,
                                        needsGPU=False)

    # -------------------------- STEPS functions ------------------------------
    def checkEnvironmentStep(self):
        """Ask the job environment what it has (Python, TensorFlow, the GPUs it sees among
        those booked): a GPU booked and not seen is said here, at the top of the log, and
        in the summary; the run goes on on the CPU."""
        self._runStage("check", *self._gpuArgs())
        report = self._runFolder().environment()
        if report is not None and report.get("warning"):
            self.warning(report["warning"])

    def consensusStep(self, radiusFraction, minVotes, inputSignature, particleDiameter,
                      fitBox, networkBox=0):
        inputs = convert.consensusInput(self._inputSets(),
                                        [self._setName(p) for p in self.inputCoordinates],
                                        particleDiameter, fitBox, networkBox)
        info = stages.consensus_stage(self._runFolder(), inputs,
                                      stages.ConsensusParams(radius=radiusFraction,
                                                             and_rule=stages.AND_AT_LEAST,
                                                             k=minVotes))
        if not self._scoreOnly():
            stages.require_training_set(info)

    def negativesStep(self, ratio, distanceFraction, seed, negativeSignature, skipBad,
                      offCentre, upstream):
        userNegatives = self.inputNegativeCoordinates.get()
        known = self._userCoordinates(userNegatives) if userNegatives is not None else None
        stages.negatives_stage(self._runFolder(), stages.NegativeParams(
            ratio=ratio, distance=distanceFraction, offcentre=offCentre, seed=seed,
            skip_bad_micrographs=skipBad), known)

    def extractStep(self, shard, jobs, size, invert, skipBad, upstream):
        """One shard of micrographs (core.shards.extraction_shard_stage), as a job."""
        self._runStage("extract", "--shard", shard, "--shards", jobs,
                       *self._extractionArgs(size, invert, skipBad))

    def mergeExtractionStep(self, jobs, size, invert, skipBad, rotational, negativeSignature,
                            upstream):
        """The shards into the run's stacks, with the known negative particles, as a job."""
        self._runFolder().write_known_particles(self._knownParticles())
        self._runStage("merge-extraction", "--shards", jobs, "--known-particles",
                       *self._extractionArgs(size, invert, skipBad),
                       *([] if rotational else ["--no-rotational-average"]))

    def modelStep(self, use, source, sourceName, architecture, upstream):
        """A new network, or the reused one copied into the run (core.stages.model_stage)."""
        stages.model_stage(self._runFolder(), use, source, sourceName, architecture)

    def trainStep(self, roundNumber, rounds, architecture, maxEpochs, patience, learningRate,
                  batchSize, seed, epochParticles, upstream):
        """Train one round (core.stages.training_stage), as a job."""
        self._runStage("train", "--round", roundNumber, "--rounds", rounds,
                       "--network", architecture, "--max-epochs", maxEpochs,
                       "--patience", patience, "--learning-rate", repr(learningRate),
                       "--batch-size", batchSize, "--seed", seed,
                       "--epoch-particles", epochParticles, *self._gpuArgs())

    def scoreStep(self, roundNumber, rounds, shard, jobs, search, upstream):
        """Score one shard of particles (core.shards.scoring_shard_stage), as a job."""
        self._runStage("score", "--round", roundNumber, "--rounds", rounds, "--shard", shard,
                       "--shards", jobs, "--seed", self.seed.get(),
                       "--centring-search", repr(search), *self._gpuArgs())

    def mergeScoresStep(self, roundNumber, rounds, jobs, search, upstream):
        """The round's scores from its shards (core.shards.merge_scores_stage)."""
        shards.merge_scores_stage(self._runFolder(), roundNumber, rounds, jobs)

    def rankStep(self, combine, upstream):
        """The final score: the network's, or its combination with the pickers' agreement."""
        stages.ranking_stage(self._runFolder(), combine)

    def createOutputStep(self, thresholdMode, threshold, minDistanceA, edgeMarginA, upstream):
        """The split at the form's threshold; the minimum distance and the edge margin (Å;
        negative: their share of the box) in pixels of the box the run worked in, which the
        consensus may have fitted to the particles' spacing."""
        automatic = thresholdMode == self.THRESHOLD_AUTOMATIC
        run = self._runFolder()
        lengths = box_policy.split_lengths_px(run.info().consensus, minDistanceA, edgeMarginA)
        split = stages.split_stage(run, None if automatic else threshold, *lengths)
        registerSplit(self, self, RunResults(self._getExtraPath()), split)

    def evaluateStep(self, knownSignature, upstream):
        """The split's scores against the known good and bad picks
        (core.stages.evaluation_stage)."""
        known = [self._userCoordinates(p.get()) if p.get() is not None else None
                 for p in (self.knownGoodCoordinates, self.knownBadCoordinates)]
        stages.evaluation_stage(self._runFolder(), *known)

    # -------------------------- INFO functions -------------------------------
    # (_validate: protocols/validation.py)
    def _summary(self):
        run = self._runFolder()
        report = run.environment()
        warning = [report["warning"]] if report and report.get("warning") else []
        try:
            return warning + run_summary.summary_lines(run.info()) + stream_summary(run)
        except RunFolderError as error:  # a run of an older version: say so, do not fail
            return warning + [str(error)]

    def _methods(self):
        try:
            info = self._runFolder().info()
        except RunFolderError as error:
            return [str(error)]
        if info.split is None:
            return ["Deep Consensus has not produced outputs yet."]
        consensus, negatives = info.consensus, info.negatives
        if info.training is None:  # a reused model scored alone
            text = ("The coordinates of %d pickers were pruned with Deep Consensus "
                    "[SanchezGarcia2018]: a %s convolutional network trained earlier (%s) "
                    "scored the %d coordinates picked by any"
                    % (consensus.n_pickers, info.model.architecture, info.model.source,
                       consensus.n_or))
        else:
            text = ("The coordinates of %d pickers were pruned with Deep Consensus "
                    "[SanchezGarcia2018]: a %s convolutional network %s on the %d "
                    "coordinates picked by at least %d pickers (radius %.1f px) against %d "
                    "negative boxes (%d of them off-centre on particles) scored the %d "
                    "coordinates picked by any"
                    % (consensus.n_pickers, info.training.architecture,
                       "trained" if info.model is None or info.model.use == run_folder.MODEL_NEW
                       else "(%s) fine-tuned" % info.model.source,
                       consensus.n_and, consensus.min_votes, consensus.radius_px,
                       negatives.n_random + negatives.n_offcentre
                       + negatives.n_user_coordinates + info.extraction.n_user_particles,
                       negatives.n_offcentre, consensus.n_or))
        if consensus.coordinates_box is not None:
            text += (" in boxes of %d px (%s; the coordinates' box was %d px)"
                     % (consensus.box,
                        "the reused network's" if consensus.box_from_network else
                        "%.1f %s" % (box_policy.BOX_PER_DIAMETER,
                                     "particle diameters" if consensus.box_spacing_px is None
                                     else "times the median spacing of the AND coordinates"),
                        consensus.coordinates_box))
        if info.training is not None and info.training.n_rounds > 1:
            text += (", retrained once with the first round's confident decisions as extra "
                     "particles and negatives")
        last = info.training.last if info.training is not None else None
        if last is not None and last.centring_search > 0:
            text += ("; each coordinate was scored as the best of its box and %d boxes %.1f px "
                     "around it" % (centring.DIRECTIONS, last.centring_search * consensus.box))
        if info.ranking.agreement is not None:
            text += ("; its score%s was combined with the pickers' votes, each picker weighted "
                     "by its reliability estimated by EM (Dawid and Skene, 1979)"
                     % ("" if info.extraction.rotational is None else
                        ", with the log-odds of a linear discriminant of each box's whitened "
                        "rotational average (fitted on the same training boxes),"))
        text += ("; %d coordinates with a score of at least %.2f were kept"
                 % (info.split.n_retained, info.split.threshold))
        if info.split.min_distance_px:
            text += (", none closer than %.0f px to a better-scored one"
                     % info.split.min_distance_px)
        if info.split.edge_margin_px:
            text += (" or than %.0f px to the micrograph's edge" % info.split.edge_margin_px)
        return [text + "."]

    def _citations(self):
        return ["SanchezGarcia2018"]

    # -------------------------- UTILS functions ------------------------------
    def _runFolder(self):
        """The run folder (core.run_folder) the stages keep their files and record in."""
        return RunFolder(self._getExtraPath())

    def _minVotes(self):
        rules = {self.AND_ALL: stages.AND_ALL, self.AND_AT_LEAST: stages.AND_AT_LEAST,
                 self.AND_MAJORITY: stages.AND_MAJORITY}
        return stages.min_votes_for(rules[self.andRule.get()], len(self.inputCoordinates),
                                    self.minVotes.get())

    def _options(self):
        method = [stages.METHOD_AGREEMENT, stages.METHOD_PUBLISHED][self.method.get()]
        return stages.MethodOptions.for_method(method, self.offCentreNegatives.get(),
                                               self.selfTraining.get(),
                                               self.combineVotes.get(),
                                               self.bestCentred.get(),
                                               self.rotationalAverage.get())

    def _modelChoice(self):
        """(use, model file, its name for the user, network) of the Model section; the file
        is empty when the chosen run or file is missing."""
        architecture = ARCHITECTURES[self.architecture.get()]
        source = self.modelSource.get()
        if source == self.MODEL_NEW:
            return run_folder.MODEL_NEW, "", "", architecture
        use = [run_folder.MODEL_FINE_TUNE, run_folder.MODEL_SCORE_ONLY][self.modelUse.get()]
        if source == self.MODEL_RUN:
            run = self.modelRun.get()
            if run is None:
                return use, "", "", architecture
            name = "the model of run '%s'" % (run.getObjLabel() or run.getRunName())
            return use, RunFolder(run._getExtraPath()).file(RunFolder.MODEL), name, architecture
        path = self.modelFile.get() or ""
        return use, path, "the model file %s" % path, architecture

    def _fitBox(self):
        """Whether the consensus may fit the run's box to the AND spacing
        (:func:`.box_policy.spacing_box`): not where the form gives the diameter, nor for a
        reused network, whose box is the one it was trained in (:meth:`_networkBox`)."""
        return self.particleDiameter.get() <= 0 and self.modelSource.get() == self.MODEL_NEW

    def _scoreOnly(self):
        return (self.modelSource.get() != self.MODEL_NEW
                and self.modelUse.get() == self.USE_SCORE_ONLY)

    def _offCentre(self):
        return self._options().offcentre_negatives

    def _rounds(self):
        return self._options().rounds

    def _combine(self):
        return self._options().combine_votes

    def _centringSearch(self):
        return self._options().centring_search

    def _rotational(self):
        return self._options().rotational_average

    def _boxes(self, firstSet):
        """The box (px) the run works in, the first set's box where that differs (else None),
        and whether it is the reused network's (:class:`.box_policy.RunBoxes`): 1.5 particle
        diameters where the form gives one, else a reused network's field of view, else the
        first set's box (0 where it has none; ``_validate`` refuses that, and a diameter
        without a pixel size)."""
        box = firstSet.getBoxSize() or 0
        sampling = convert.samplingRate(firstSet)
        if not box or not sampling:
            return box_policy.RunBoxes(box, None, False)
        return box_policy.run_boxes(box, self.particleDiameter.get(), sampling,
                                    self._networkBox(firstSet) or None)

    def _fittedBox(self, firstSet):
        """The box the consensus will fit to the AND spacing (:func:`.box_policy.spacing_box`),
        measured on the input sets before the run as the diameter wizard measures it; None
        where the run will not fit it."""
        box = firstSet.getBoxSize() or 0
        if not self._fitBox() or not box:
            return None
        return box_policy.spacing_box(box, self._agreedSpacing(self._inputSets()))

    def _agreedSpacing(self, sets):
        """The AND spacing of the picks of ``sets`` before the run
        (:func:`.box_policy.agreed_spacing`), merged with the form's consensus radius and votes
        in the first set's box, as the consensus will merge them: what the run fits its box
        to and the diameter wizard proposes."""
        return box_policy.agreed_spacing(convert.inputPicks(sets),
                                         self.consensusRadius.get() * sets[0].getBoxSize(),
                                         self._minVotes())

    def _networkBox(self, firstSet):
        """The box the run takes from a reused network (:meth:`_reusedNetworkBox`): without
        a particle diameter it works in the field of view the network was trained on.  0
        with a diameter."""
        return 0 if self.particleDiameter.get() > 0 else self._reusedNetworkBox(firstSet)

    def _reusedNetworkBox(self, firstSet):
        """The reused network's box in the first set's pixels (:func:`.box_policy.network_box`);
        0 for a new network, or where the model cannot be read (``_validateModel`` says
        why)."""
        if self.modelSource.get() == self.MODEL_NEW:
            return 0
        try:
            spec = read_spec(self._modelChoice()[1])
        except ModelFileError:
            return 0
        return box_policy.network_box(spec, convert.samplingRate(firstSet)) or 0

    def _workingBox(self, firstSet):
        """The box (px) the run works in (:meth:`_boxes`)."""
        return self._boxes(firstSet)[0]

    def _inputSets(self):
        return [pointer.get() for pointer in self.inputCoordinates]

    def _inputSignature(self):
        return ";".join("%s:%s" % (self._setName(p), p.get().getSize())
                        for p in self.inputCoordinates)

    def _knownSignature(self):
        """The known good and bad sets, so that continue re-evaluates when they change."""
        return ";".join("%s=%s:%d" % (kind, self._setName(p), p.get().getSize())
                        for p, kind in ((self.knownGoodCoordinates, "good"),
                                        (self.knownBadCoordinates, "bad"))
                        if p.get() is not None)

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

    def _runStage(self, piece, *arguments):
        """Run a piece of a stage as a job of ``deepconsensus job`` in the plugin's
        environment (``Plugin.getJobProgram``), on this run's folder."""
        from .. import Plugin

        # The job's own one-line error (which micrograph, which file) is what the user needs
        # to see, not the command line that failed: the job writes it to this file.
        errorFile = self._getTmpPath("%s-%s.error" % (piece, uuid.uuid4().hex[:8]))
        words = (["-v", "--error-file", errorFile, "job", piece, "--out", self._getExtraPath()]
                 + [str(a) for a in arguments])
        try:
            self.runJob(Plugin.getJobProgram(),
                        " ".join(w if w == GPU_PLACEHOLDER else shlex.quote(w) for w in words),
                        env=Plugin.getEnviron())
        except Exception as error:
            if os.path.exists(errorFile):
                with open(errorFile) as handle:
                    raise RuntimeError(handle.read().strip()) from error
            raise

    def _gpuArgs(self):
        """The GPUs Scipion books for the step (%(GPU)s, filled in by runJob), or the CPU."""
        booked = self.usesGpu() and self.getGpuList()
        return ["--gpus", GPU_PLACEHOLDER if booked else "cpu"]

    @staticmethod
    def _extractionArgs(size, invert, skipBad):
        return (["--network-size", size] + (["--invert-contrast"] if invert else [])
                + (["--skip-bad-micrographs"] if skipBad else []))

    def _knownParticles(self):
        """The form's known negative particles (none: an empty record)."""
        userParticles = self.inputNegativeParticles.get()
        if userParticles is None:
            return KnownParticles()
        return KnownParticles([(p.getIndex() or 1, p.getFileName())
                               for p in userParticles.iterItems()],
                              userParticles.getSamplingRate())

    def _userCoordinates(self, userSet):
        """A user's coordinates (known negatives, known good or bad picks), mapped to the
        run's micrographs and pixel size."""
        run = self._runFolder()
        byName = {m.name: m.mic_id for m in run.micrographs().values()}
        reference = run.info().consensus.sampling_rate
        theirs = convert.micrographsByName(userSet.getMicrographs())
        idToName = {info[0]: name for name, info in theirs.items()}
        picks = convert.coordinatesByMicrograph(userSet, idToName)
        factor = (convert.samplingRate(userSet) or reference or 1.0) / (reference or 1.0)
        known = {byName[n]: xy * factor for n, xy in picks.items() if n in byName}
        return pipeline.CoordinateTable.from_picks(known)


class _Chain:
    """The signature of every step parameter so far (see ``_insertAllSteps``): a short hash
    that changes when any earlier parameter does."""

    def __init__(self):
        self.key = ""

    def after(self, values) -> str:
        """Chain ``values`` (a stage's parameters) into the signature; the new signature."""
        self.key = hashlib.sha1((self.key + repr(tuple(values))).encode()).hexdigest()[:16]
        return self.key
