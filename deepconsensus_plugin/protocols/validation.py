"""The form's checks of ProtDeepConsensus, made before any step runs.

Each check names the problem and the object (which input set, which micrograph or
file, which parameter), so that bad input is refused at the form and loses nothing.
Where a check needs the box the run will work in, it asks the protocol
(``_workingBox``, ``_fittedBox``), which asks the core's box policy as the run does.
The streaming parameters are checked by :class:`.DeepConsensusStreaming`.
"""
from .. import convert
from ..core import box_policy, extraction, parameters, stages
from ..core.consensus import rescale
from ..core.model_file import ModelFileError, read_spec
from ..core.negatives import picker_particles


class DeepConsensusValidation:
    """The ``_validate`` half of ProtDeepConsensus (a mixin: it reads the protocol's params
    and uses its helpers)."""

    RANGE_PARAMETERS = {
        "radius": ("consensusRadius", "Consensus radius"),
        "negative_ratio": ("negativeRatio", "Negatives per positive"),
        "negative_distance": ("negativeDistance", "Exclusion distance"),
        "network_size": ("networkSize", "Network box size"),
        "max_epochs": ("maxEpochs", "Maximum epochs"),
        "epoch_particles": ("epochParticles", "Boxes of each class per epoch"),
        "patience": ("patience", "Early-stopping patience"),
        "learning_rate": ("learningRate", "Learning rate"),
        "batch_size": ("batchSize", "Batch size"),
        "threshold": ("threshold", "Score threshold"),
        "min_distance": ("minDistance", "Minimum distance between particles"),
        "edge_margin": ("edgeMargin", "Edge margin"),
        "seed": ("seed", "Random seed")}
    """The form's parameter (attribute, words) of each range :mod:`.core.parameters`
    checks, by the core's name."""

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
            elif coordSet.getSize() == 0 and not coordSet.isStreamOpen():
                errors.append("Input coordinate set %s is empty." % self._setName(pointer))
        if errors:  # the sets cannot be compared; the parameters can, in the same round
            return errors + self._validateRanges(len(pointers))
        errors += self._validateDifferentSets(pointers, sets)
        box = sets[0].getBoxSize()
        if not box or box < box_policy.MIN_BOX:
            errors.append("The box size of %s is %s: set it (at least %d px) when picking."
                          % (self._setName(pointers[0]), box, box_policy.MIN_BOX))
        errors += self._validateDiameter(pointers[0], sets[0])
        micrographs = [convert.micrographsByName(s.getMicrographs()) for s in sets]
        names = [set(byName) for byName in micrographs]
        if not set.intersection(*names) and not self._inputsOpen():
            errors.append("The input sets share no micrograph (matched by name): %s."
                          % ", ".join(self._setName(p) for p in pointers))
        errors += self._validateKnownNegatives(pointers, sets)
        errors += self._validateImageFormats(pointers, micrographs)
        errors += self._validateKnownParticleField(sets[0])
        errors += self._validateModel(sets[0])
        errors += self._validateKnownPicks(names)
        errors += self._validateRanges(len(sets))
        errors += self._validateStreaming()
        return errors

    def _validateDifferentSets(self, pointers, sets):
        """Refuse a set selected twice: consensus would make every one of its picks, junk
        included, an AND particle.  (Two sets with the same picks, one file imported
        twice, are refused by the consensus step, which reads them.)"""
        first = {}
        errors = []
        for pointer, coordSet in zip(pointers, sets):
            fileName = coordSet.getFileName()
            if fileName in first:
                errors.append("The input coordinate set %s is selected twice (also as %s): "
                              "deep consensus needs the picks of different pickers."
                              % (self._setName(pointer), self._setName(first[fileName])))
            else:
                first[fileName] = pointer
        return errors

    def _validateDiameter(self, pointer, firstSet):
        """A particle diameter needs the first set's pixel size, and must fit its box: a
        particle wider than the box it was picked with is a diameter in other units."""
        diameter = self.particleDiameter.get()
        sampling = convert.samplingRate(firstSet)
        if diameter <= 0:
            return []
        if not sampling:
            return ["A particle diameter in Å needs the pixel size of %s, which has none."
                    % self._setName(pointer)]
        box = firstSet.getBoxSize() or 0
        if box and diameter / sampling > box:
            return ["The particle diameter %g Å (%.0f px) is larger than the box of %s "
                    "(%d px at %.3f Å/px): give it in Å."
                    % (diameter, diameter / sampling, self._setName(pointer), box, sampling)]
        if box_policy.BOX_PER_DIAMETER * diameter / sampling < box_policy.MIN_BOX:
            return ["The particle diameter %g Å is under %.0f px at %.3f Å/px: give it in Å."
                    % (diameter, box_policy.MIN_BOX / box_policy.BOX_PER_DIAMETER, sampling)]
        return []

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
        radius = self.consensusRadius.get() * self._workingBox(sets[0])  # no box: refused
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
            onPicks = picker_particles(knownXy, picks, radius)
            if onPicks is not None:
                errors.append("%d of the %d known negatives %s on the micrographs they share "
                              "with the input set %s lie within the consensus radius of its "
                              "picks: they are particles, not the non-particles (ice, carbon, "
                              "contamination) known negatives must be."
                              % (*onPicks, self._setName(negPointer), self._setName(pointer)))
        return errors

    def _validateImageFormats(self, pointers, micrographs):
        """Refuse micrographs, and known negative particles, in a format the run cannot
        read (:func:`.extraction.format_problem`: SPIDER, EMAN's HDF, DM4...), naming the
        set and a file, before any step runs instead of at extraction."""
        errors, seen = [], set()
        for pointer, byName in zip(pointers, micrographs):
            files = [fileName for _, fileName, _ in byName.values()]
            if tuple(files) not in seen:  # pickers on one set of micrographs: said once
                seen.add(tuple(files))
                errors += self._formatErrors("The micrographs of %s" % self._setName(pointer),
                                             files, particles=False)
        particles = self.inputNegativeParticles.get()
        if particles is not None:
            files = sorted({p.getFileName() for p in particles.iterItems()})
            errors += self._formatErrors(
                "The known negative particles %s" % self._setName(self.inputNegativeParticles),
                files, particles=True)
        return errors

    def _validateKnownParticleField(self, firstSet):
        """Known negative particles are cut to the run's field of view at their pixel size
        before they are resized (:class:`.KnownParticles`): images narrower than that
        field cannot show it.  Where they are narrower than the coordinates' box, the box
        the consensus will fit is measured first (:meth:`_fittedBox`).  (A format not read
        is said by :meth:`_validateImageFormats`.)"""
        particles = self.inputNegativeParticles.get()
        if particles is None or particles.getSize() == 0:
            return []
        path = particles.getFirstItem().getFileName()
        name = self._setName(self.inputNegativeParticles)
        if extraction.format_problem(path, particles=True):
            return []
        try:
            box = extraction.particle_box(path)
        except extraction.MicrographError as error:
            return ["The known negative particles %s: %s cannot be read (%s)."
                    % (name, path, error.reason)]
        runBox, sampling = self._workingBox(firstSet), convert.samplingRate(firstSet)
        field = stages.field_in_pixels(runBox, sampling, particles.getSamplingRate())
        if field is None or round(field) <= box:
            return []
        fitted = self._fittedBox(firstSet)  # reads every pick: only where it could help
        if fitted is not None:
            runBox = fitted
            field = stages.field_in_pixels(runBox, sampling, particles.getSamplingRate())
            if round(field) <= box:
                return []
        return ["The known negative particles %s are boxes of %d px at %.3f Å/px (%.0f Å), "
                "narrower than the run's boxes (%d px at %.3f Å/px, %.0f Å): extract them "
                "with a box of at least %d px." % (name, box, particles.getSamplingRate(),
                                                   box * particles.getSamplingRate(), runBox,
                                                   sampling, runBox * sampling, round(field))]

    @staticmethod
    def _formatErrors(what, fileNames, particles):
        """One error per unreadable format among ``fileNames``: how many, and one of them."""
        byProblem = {}
        for fileName in fileNames:
            problem = extraction.format_problem(fileName, particles=particles)
            if problem:
                byProblem.setdefault(problem, []).append(fileName)
        return ["%s: %s (%d of %d files, e.g. %s)."
                % (what, problem, len(unreadable), len(fileNames), unreadable[0])
                for problem, unreadable in byProblem.items()]

    def _validateKnownPicks(self, inputNames):
        """Known good or bad picks must be coordinates on the input micrographs."""
        errors = []
        for pointer, kind in ((self.knownGoodCoordinates, "good"),
                              (self.knownBadCoordinates, "bad")):
            known = pointer.get()
            if known is None:
                continue
            if known.getSize() == 0:
                errors.append("The known %s picks %s are empty." % (kind, self._setName(pointer)))
            elif not set(convert.micrographsByName(known.getMicrographs())) & set.union(
                    *inputNames):
                errors.append("The known %s picks %s are on none of the input micrographs "
                              "(matched by name)." % (kind, self._setName(pointer)))
        return errors

    def _validateModel(self, firstSet):
        """Refuse a reused model trained on other boxes, naming both values (the check is
        core.model_file's, which the deepconsensus command makes too)."""
        if self.modelSource.get() == self.MODEL_NEW:
            return []
        use, path, name, architecture = self._modelChoice()
        if not path:
            return ["Choose the %s whose model to reuse (Model section)."
                    % ("previous run" if self.modelSource.get() == self.MODEL_RUN
                       else "model file")]
        try:
            spec = read_spec(path)
        except ModelFileError as error:
            return ["Cannot reuse the model: %s." % error]
        ours = stages.run_model_spec(self._workingBox(firstSet),
                                     convert.samplingRate(firstSet), self.networkSize.get(),
                                     self.invertContrast.get(), architecture)
        return stages.reuse_errors(spec, ours, name[0].upper() + name[1:])

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
        """One message per parameter out of its range (:mod:`.core.parameters`, which the
        command line checks too); a parameter hidden by its form condition (k, the fixed
        threshold) is unused and not checked."""
        values = {name: getattr(self, attribute).get()
                  for name, (attribute, _) in self.RANGE_PARAMETERS.items()}
        if not self.evalParamCondition("threshold"):
            values["threshold"] = None
        errors = ["%s must be %s." % (self.RANGE_PARAMETERS[name][1], text)
                  for name, _, text in parameters.out_of_range(values)]
        if self.evalParamCondition("minVotes") and not 1 <= self.minVotes.get() <= nSets:
            errors.append("k must be between 1 and the number of input sets (%d)." % nSets)
        return errors
