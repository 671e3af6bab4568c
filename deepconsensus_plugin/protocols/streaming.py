"""Streaming for ProtDeepConsensus: open input sets processed in batches of micrographs.

Pattern followed: pyworkflow 3.11's ``ProtStreamingBase``
(``pyworkflow/protocol/protocol.py``) as the current Scipion plugins use it
(e.g. scipion-em-imod's tilt-series preprocess, scipion-em-xmipp's
``protocol_alignPCA_2D``): parallel steps; one resumable generator step
(its argument a time stamp, so that "continue" always runs it again) that
polls the inputs, inserts a processing step per batch of new items with the
previous batch step as prerequisite, and when the inputs are closed and
everything is read inserts a final step that closes the outputs and leaves
the loop; ``_stepsCheck`` stores the steps the generator inserted; outputs
are created or extended with ``_updateOutputSet`` (``Set.STREAM_OPEN``, then
``STREAM_CLOSED``) inside ``with self._lock``.  The protocol does not derive
from ``ProtStreamingBase`` because that base always streams, and closed
inputs must run today's steps unchanged: :meth:`_insertStreamingSteps` does
what its ``_insertAllSteps`` does, and only when an input is open.

The work of a batch is the core's (:class:`.core.streaming.StreamingRun`):
consensus, training once the AND set is large enough, scoring, splitting and
the record that makes a stopped run resume after its last finished batch.
"""
import time
from datetime import datetime

import numpy as np
import pyworkflow.protocol.params as params
from pyworkflow.object import Set

from .. import convert
from ..core import stages
from ..core.consensus import rescale
from ..core.model import ARCHITECTURES
from ..core.run_folder import Micrograph
from ..core.streaming import StreamingRun, StreamSettings, ready_micrographs
from .outputs import OUTPUT_PRUNED, OUTPUT_RETAINED


class DeepConsensusStreaming:
    """The streaming half of ProtDeepConsensus (a mixin: it uses the protocol's params)."""

    def _defineStreamingParams(self, form):
        form.addSection(label="Streaming")
        form.addParam("streamBatchSize", params.IntParam, default=10,
                      label="Micrographs per batch",
                      help="With open input sets (on-the-fly processing), micrographs are "
                           "taken in batches of this many as soon as every picker has "
                           "picked them; the last batch may be smaller. Closed inputs are "
                           "processed all at once, as always.")
        form.addParam("streamTrainAt", params.IntParam, default=0,
                      label="Train once the AND set has (particles)",
                      help="With open inputs, the network trains once this many "
                           "coordinates are picked by enough pickers (or when the inputs "
                           "close first), then scores each new batch as it comes. 0: the "
                           "AND particles of 20 micrographs at the rate seen so far, and at "
                           "least 1000.")
        form.addParam("streamRetrainFactor", params.FloatParam, default=0.0,
                      label="Retrain when the AND set has grown by",
                      help="With open inputs, train the network again once the AND set is "
                           "this many times larger than at the last training (2: each "
                           "doubling); the batches after that are scored by the newer "
                           "network, the coordinates already in the outputs keep their "
                           "scores, and the summary says which network scored which "
                           "batches. 0: train once.")
        form.addParam("streamingSleepOnWait", params.IntParam, default=10,
                      expertLevel=params.LEVEL_ADVANCED,
                      label="Sleep when waiting (s)",
                      help="How long to wait between looks at the open inputs.")

    def _validateStreaming(self):
        """Open inputs run the generator and the batches side by side: with the main
        process's, three threads (pyworkflow's ThreadStepExecutor runs steps on all but
        one; ProtStreamingBase's docstring asks for three too)."""
        errors = []
        factor = self.streamRetrainFactor.get()
        if factor != 0 and factor <= 1:
            errors.append("Retrain when the AND set has grown by: 0 (train once) or a factor "
                          "above 1; %s given." % factor)
        if self._inputsOpen() and self.numberOfThreads.get() < 3:
            errors.append("The input sets are still open (streaming): set Threads to at "
                          "least 3: the main process, one thread to watch the inputs and "
                          "one to process the batches.")
        return errors

    # -------------------------- steps ----------------------------------------
    def _inputsOpen(self):
        """Whether an input coordinate set (or its micrographs) is still growing."""
        for pointer in self.inputCoordinates:
            coordSet = pointer.get()
            if coordSet is not None and (coordSet.isStreamOpen()
                                         or coordSet.getMicrographs().isStreamOpen()):
                return True
        return False

    def _insertStreamingSteps(self):
        self._insertFunctionStep(self.streamGeneratorStep, str(datetime.now()),
                                 needsGPU=False)

    def _stepsCheck(self):
        """Store the steps the generator inserted (ProtStreamingBase._stepsCheck)."""
        if self._newSteps:
            self.updateSteps()

    def streamGeneratorStep(self, timeStamp):
        """Insert a batch step whenever enough micrographs are ready, and the closing step
        once the inputs are closed and every micrograph is in a batch."""
        stream = self._stream()
        queued = set(stream.state.done)
        lastStep = None
        while True:
            arrived, picked, closed = self._pollInputs()
            ready = ready_micrographs(arrived, picked, closed, queued)
            allClosed = all(closed)
            size = max(self.streamBatchSize.get(), 1)
            while ready and (len(ready) >= size or allClosed):
                batch, ready = ready[:size], ready[size:]
                queued.update(batch)
                lastStep = self._insertFunctionStep(
                    self.streamBatchStep, batch,
                    prerequisites=[lastStep] if lastStep else [], needsGPU=True)
            if allClosed and not ready:
                self._insertFunctionStep(self.streamCloseStep,
                                         prerequisites=[lastStep] if lastStep else [],
                                         needsGPU=True)
                return
            time.sleep(max(self.streamingSleepOnWait.get(), 1))

    def streamBatchStep(self, names):
        """Add a batch; train when the AND set is large enough; append what is scored."""
        stream = self._stream()
        if not set(names) <= stream.state.done:  # a resumed run skips finished batches
            micrographs, picks = self._batchInput(names)
            stream.add_batch(micrographs, picks)
        if stream.should_train(inputs_closed=False):
            stream.train(**self._knownNegatives())
        elif stream.should_retrain():
            stream.retrain(**self._knownNegatives())
        self._publish(stream, Set.STREAM_OPEN)

    def streamCloseStep(self):
        """The inputs are closed: train if that has not happened, append the rest, close,
        and rate the scores against the known picks as a batch run does."""
        stream = self._stream()
        if stream.should_train(inputs_closed=True):
            stream.train(**self._knownNegatives())
        stream.close()
        self._publish(stream, Set.STREAM_CLOSED)
        self.evaluateStep(self._knownSignature(), upstream="")  # called here, not a step

    # -------------------------- inputs and outputs ---------------------------
    def _freshSets(self):
        """Per input: (its coordinates, its micrographs) as they are now in their files (the
        pointers hold what the run started with)."""
        fresh = []
        for pointer in self.inputCoordinates:
            old = pointer.get()
            coordSet = type(old)(filename=old.getFileName())
            coordSet.loadAllProperties()
            oldMics = old.getMicrographs()
            mics = type(oldMics)(filename=oldMics.getFileName())
            mics.loadAllProperties()
            fresh.append((coordSet, mics))
        return fresh

    @staticmethod
    def _closeAll(fresh):
        for coordSet, mics in fresh:
            coordSet.close()
            mics.close()

    def _pollInputs(self):
        """(micrographs of the first set in arrival order, per set the names of the
        micrographs it has coordinates on, per set whether it is closed)."""
        with self._lock:
            fresh = self._freshSets()
            arrived, picked, closed = None, [], []
            for coordSet, mics in fresh:
                names = {mic.getObjId(): convert.micrographKey(mic) for mic in mics}
                if arrived is None:
                    arrived = [names[i] for i in sorted(names)]
                ids = coordSet.getUniqueValues("_micId") if coordSet.getSize() else []
                picked.append({names[i] for i in ids if i in names})
                closed.append(coordSet.isStreamClosed() and mics.isStreamClosed())
            self._closeAll(fresh)
        return arrived, picked, closed

    def _batchInput(self, names):
        """The batch's micrographs (ids, files and names of the first set's) and each set's
        picks on them, in the first set's pixel size."""
        with self._lock:
            fresh = self._freshSets()
            reference = fresh[0][1].getSamplingRate()
            refMics = convert.micrographsByName(fresh[0][1])
            micrographs = [Micrograph(mic_id=refMics[n][0], name=n, path=refMics[n][1],
                                      label=refMics[n][2]) for n in names]
            ids = {m.name: m.mic_id for m in micrographs}
            picks = []
            for coordSet, mics in fresh:
                theirs = convert.micrographsByName(mics)
                idToName = {theirs[n][0]: n for n in names if n in theirs}
                byName = convert.coordinatesByMicrograph(coordSet, idToName, onlyThese=True)
                sampling = mics.getSamplingRate()
                if sampling and reference and abs(sampling - reference) > 1e-6:
                    byName = {n: rescale(xy, sampling, reference) for n, xy in byName.items()}
                picks.append({ids[n]: xy for n, xy in byName.items()})
            self._closeAll(fresh)
        return micrographs, picks

    def _publish(self, stream, state):
        """Append the scored batches not yet in the outputs, then set the outputs' state
        (open, or closed at the end)."""
        with self._lock:
            outputs = {}
            for name, suffix in ((OUTPUT_RETAINED, "retained"), (OUTPUT_PRUNED, "pruned")):
                coordSet = getattr(self, name, None)
                if coordSet is None:
                    micsPointer = self.inputCoordinates[0].get().getMicrographs(asPointer=True)
                    coordSet = self._createSetOfCoordinates(micsPointer, suffix=suffix)
                    coordSet.setBoxSize(stream.output_box)
                else:
                    coordSet.enableAppend()
                outputs[name] = coordSet
            batches = stream.unpublished()
            if batches:
                table, scores = stream.run.consensus(), stream.run.scores()
                mics = stream.run.micrographs()
                for batch in batches:
                    rows, split = stream.batch_split(batch)
                    duplicate = np.zeros(len(table), dtype=bool)
                    duplicate[rows] = split.duplicate
                    atEdge = np.zeros(len(table), dtype=bool)
                    atEdge[rows] = split.at_edge
                    for name, chosen in ((OUTPUT_RETAINED, split.retained),
                                         (OUTPUT_PRUNED, split.pruned)):
                        convert.fillCoordinates(outputs[name], rows[chosen], table.mic,
                                                table.xy, scores, table.votes, duplicate,
                                                atEdge, mics, rowIds=True)
            for name, coordSet in outputs.items():
                new = not self.hasAttribute(name)
                self._updateOutputSet(name, coordSet, state)
                if new:
                    for pointer in self.inputCoordinates:
                        self._defineSourceRelation(pointer, getattr(self, name))
            stream.mark_published(batches)

    def _knownNegatives(self):
        """The form's known negatives for a training on the micrographs so far: the
        coordinates on those micrographs, and the particles."""
        coordinates = self.inputNegativeCoordinates.get()
        return {"known": (self._userCoordinates(coordinates) if coordinates is not None
                          else None),
                "known_particles": self._knownParticles()}

    def _stream(self):
        """The run folder's streaming run with this form's parameters."""
        first = self.inputCoordinates[0].get()
        use, source, name, architecture = self._modelChoice()
        settings = StreamSettings(
            consensus=stages.ConsensusParams(radius=self.consensusRadius.get(),
                                             and_rule=stages.AND_AT_LEAST, k=self._minVotes()),
            negatives=stages.NegativeParams(ratio=self.negativeRatio.get(),
                                            distance=self.negativeDistance.get(),
                                            offcentre=self._offCentre(), seed=self.seed.get(),
                                            skip_bad_micrographs=self.skipBadMicrographs.get()),
            extraction=stages.ExtractionParams(network_size=self.networkSize.get(),
                                               invert=self.invertContrast.get(),
                                               skip_bad_micrographs=self.skipBadMicrographs.get(),
                                               rotational_average=self._rotational()),
            training=stages.TrainingParams(architecture=ARCHITECTURES[self.architecture.get()],
                                           max_epochs=self.maxEpochs.get(),
                                           patience=self.patience.get(),
                                           learning_rate=self.learningRate.get(),
                                           batch_size=self.batchSize.get(), seed=self.seed.get(),
                                           rounds=self._rounds(),
                                           epoch_particles=self.epochParticles.get()),
            combine_votes=self._combine(),
            centring_search=self._centringSearch(),
            threshold=(None if self.thresholdMode.get() == self.THRESHOLD_AUTOMATIC
                       else self.threshold.get()),
            min_distance=self.minDistance.get(), edge_margin=self.edgeMargin.get(),
            fit_box=self._fitBox(),
            train_at=self.streamTrainAt.get(),
            retrain_factor=self.streamRetrainFactor.get(),
            model_use=use, model_source=source or None, model_name=name or None,
            gpus=tuple(self.getGpuList() if self.usesGpu() else ()))
        boxes = self._boxes(first)
        return StreamingRun(self._runFolder(), settings,
                            [self._setName(p) for p in self.inputCoordinates],
                            boxes.box, convert.samplingRate(first), boxes.coordinates_box,
                            boxes.from_network)
