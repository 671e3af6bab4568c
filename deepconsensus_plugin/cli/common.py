"""What the ``deepconsensus`` sub-commands share: their options, reading the inputs into
the core's records, progress bars, the closing summary and the stage sequences.

The stages themselves are :mod:`deepconsensus_plugin.core.stages`, the same
functions Scipion's protocol calls; this module only turns files and flags
into their inputs.
"""
from __future__ import annotations

import argparse
import glob
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..core import (box_policy, centring, parameters, pipeline, run_folder, run_summary,
                    stages)
from ..core.consensus import rescale
from ..core.extraction import format_problem, is_tiff
from ..core.model import ARCHITECTURES, DEFAULT_SIZE
from ..core.model_file import ModelFileError, read_spec
from ..core.negatives import picker_particles
from ..core.pick_inputs import (MicrographList, PickSet, match_micrographs, micrograph_key,
                                read_picks, read_relion_micrographs)
from ..core.run_folder import ExportInfo, Micrograph, MethodInfo, RunFolder
from ..core.selection import DEFAULT_EDGE_MARGIN, DEFAULT_MIN_DISTANCE


class InputError(ValueError):
    """Bad command-line input: reported as one line, without a traceback."""


# ------------------------------------------------------------------ options

def add_out(parser: argparse.ArgumentParser, new: bool = False) -> None:
    parser.add_argument("-o", "--out", required=True, metavar="FOLDER",
                        help="run folder: " + ("created if needed; every file of the run goes "
                                               "here" if new else
                                               "a folder an earlier 'deepconsensus' "
                                               "command wrote"))


def add_inputs(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inputs")
    group.add_argument("--micrographs", required=True, metavar="GLOB_OR_STAR",
                       help="the micrographs: a quoted glob ('MotionCorr/job002/Movies/*.mrc') "
                            "or a RELION micrographs.star (motion correction or CTF output); "
                            "pick coordinates must refer to these micrographs' pixels")
    group.add_argument("--picks", action="append", required=True, metavar="PATH",
                       help="one picker's coordinates; repeat for each picker (at least two): "
                            "a folder of .box/.star/.csv/.pos files (one per micrograph), a "
                            "RELION particle or coordinate STAR file (e.g. "
                            "AutoPick/job010/autopick.star), or a cryoSPARC .cs file of picked "
                            "particles")
    group.add_argument("--picks-pattern", default="*", metavar="GLOB",
                       help="in a --picks folder, read only the files matching this "
                            "(e.g. '*_autopick.star'; default: all supported files)")
    group.add_argument("--relion-project", default=".", metavar="FOLDER",
                       help="the RELION project folder the paths in STAR files are relative "
                            "to (default: the current folder)")
    group.add_argument("--flip-y", action="store_true",
                       help="cryoSPARC .cs picks: flip y (when the picks appear mirrored "
                            "top to bottom on the micrographs)")
    group.add_argument("--pixel-size", type=float, metavar="A",
                       help="micrograph pixel size in A (default: from micrographs.star, "
                            "else from the first micrograph's MRC header)")
    group.add_argument("--box-size", type=int, metavar="PX",
                       help="box size in micrograph pixels, about 1.5-2 particle diameters "
                            "(default: from the first picker that records one, e.g. .box "
                            "files or a RELION/cryoSPARC particle file)")
    group.add_argument("--diameter", type=float, default=0.0, metavar="A",
                       help="particle diameter in A: the run then works in boxes of %.1f "
                            "diameters instead of --box-size (the outputs keep --box-size); "
                            "give it when the box is 2 diameters or more, so that in a "
                            "crowded field the neighbours stay out of the network's view "
                            "(default: work in --box-size, or where it exceeds %.0f times "
                            "the median spacing of the agreed picks, in boxes of %.1f "
                            "spacings)" % (box_policy.BOX_PER_DIAMETER,
                                           box_policy.CROWDED_BOX_PER_SPACING,
                                           box_policy.BOX_PER_DIAMETER))
    group.add_argument("--voltage", type=float, metavar="KV",
                       help="acceleration voltage for the output STAR files' optics table "
                            "(default: from micrographs.star or the picks; RELION needs it)")
    group.add_argument("--cs", type=float, metavar="MM",
                       help="spherical aberration for the optics table (default: as --voltage)")
    group.add_argument("--amplitude-contrast", type=float, metavar="FRACTION",
                       help="amplitude contrast for the optics table (default: as --voltage, "
                            "or left out)")


def add_consensus(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("consensus")
    group.add_argument("--radius", type=float, default=stages.ConsensusParams.radius,
                       metavar="FRACTION",
                       help="picks of different pickers closer than this fraction of the box "
                            "are the same particle (default: %(default)s, the paper's)")
    group.add_argument("--and-rule", choices=stages.AND_RULES,
                       default=stages.ConsensusParams.and_rule,
                       help="which coordinates train the network as particles: picked by all "
                            "pickers, by at least --k, or by a majority (default: "
                            "%(default)s; tolerates one weak picker)")
    group.add_argument("--k", type=int, default=stages.ConsensusParams.k,
                       help="with --and-rule at-least: the number of pickers (default: "
                            "%(default)s)")


def add_method(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("method")
    group.add_argument("--method", choices=stages.METHODS, default=stages.METHOD_AGREEMENT,
                       help="'agreement' (recommended): off-centre negatives, a second "
                            "round on the first round's confident decisions, each pick scored "
                            "at its best-centred box, and the score combined with how "
                            "reliable each picker proved; 'published': Sanchez-Garcia et al. "
                            "2018 (default: %(default)s)")
    group.add_argument("--offcentre-negatives", action=argparse.BooleanOptionalAction,
                       default=True,
                       help="agreement method: one negative per particle centred %.0f%%%% "
                            "of a box off it, so that badly centred picks and boxes that "
                            "catch a neighbour score low (default: on)"
                       % (100 * stages.OFFCENTRE_SHIFT))
    group.add_argument("--no-self-training", action="store_true",
                       help="agreement method: one training round only (half the time)")
    group.add_argument("--no-combine-votes", action="store_true",
                       help="agreement method: score with the network alone")
    group.add_argument("--no-best-centred", action="store_true",
                       help="agreement method: score each pick at its coordinate only, not "
                            "the best of it and %d positions %.0f%%%% of the box around it "
                            "(which judges a particle picked off-centre as it looks "
                            "centred, for %d times the final scoring)"
                       % (centring.DIRECTIONS, 100 * centring.DEFAULT_SEARCH,
                          centring.boxes_per_pick(centring.DEFAULT_SEARCH)))
    group.add_argument("--no-rotational-average", action="store_true",
                       help="agreement method: judge each box by the network alone, without "
                            "the linear discriminant of its whitened rotational average "
                            "whose log-odds the agreement adds to the network's")


def add_training(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("negatives and extraction")
    group.add_argument("--negative-ratio", type=float, default=stages.NegativeParams.ratio,
                       help="random background boxes per particle (default: %(default)s)")
    group.add_argument("--negative-distance", type=float,
                       default=stages.NegativeParams.distance, metavar="FRACTION",
                       help="random negatives keep this fraction of the box from every pick "
                            "(default: %(default)s)")
    group.add_argument("--network-size", type=int, default=DEFAULT_SIZE, metavar="PX",
                       help="boxes are downsampled to this size for the network "
                            "(default: %(default)s)")
    group.add_argument("--known-negatives", metavar="PICKS",
                       help="coordinates of non-particles (ice, carbon, contamination, e.g. "
                            "picked by hand; any format --picks reads) added to the "
                            "negatives; refused where more than half lie on one picker's "
                            "picks (that picker's particles)")
    group.add_argument("--invert-contrast", action="store_true",
                       help="multiply the particles by -1 (only consistency matters)")
    group.add_argument("--skip-bad-micrographs", action="store_true",
                       help="leave out unreadable micrographs instead of stopping")
    group = parser.add_argument_group("training")
    group.add_argument("--network", choices=ARCHITECTURES, default=ARCHITECTURES[0],
                       help="'fast' (default) or 'paper', the published network")
    group.add_argument("--max-epochs", type=int, default=stages.TrainingParams.max_epochs,
                       help="upper bound on epochs per round; training stops earlier when "
                            "the validation loss stops improving (default: %(default)s)")
    group.add_argument("--epoch-particles", type=int, metavar="N",
                       default=stages.TrainingParams.epoch_particles,
                       help="at most N particles and N negatives an epoch, the rest in turn "
                            "in later epochs, and at most N/5 of each held out: bounds the "
                            "time of a large dataset's epochs; 0: every box every epoch, as "
                            "in the paper (default: %(default)s)")
    group.add_argument("--patience", type=int, default=stages.TrainingParams.patience,
                       help="stop after this many epochs without improvement; the learning "
                            "rate drops tenfold after half as many (default: %(default)s)")
    group.add_argument("--learning-rate", type=float,
                       default=stages.TrainingParams.learning_rate,
                       help="Adam's initial learning rate (default: %(default)s)")
    group.add_argument("--batch-size", type=int, default=stages.TrainingParams.batch_size,
                       help="particles per training step (default: %(default)s)")
    group = parser.add_argument_group("model reuse")
    group.add_argument("--model", metavar="FILE_OR_FOLDER",
                       help="start from the network of an earlier run (of the same sample): "
                            "its model.keras, or its run folder; fine-tuned on this data "
                            "unless --score-only.  Network size, contrast and network must "
                            "match it; the run works in the boxes (in A) it was trained in, "
                            "whatever --box-size, unless --diameter gives others (refused)")
    group.add_argument("--score-only", action="store_true",
                       help="with --model: score with that network as it is, no training")


def add_seed_and_gpus(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("computing")
    group.add_argument("--seed", type=int, default=0,
                       help="seeds negatives, validation split and network: the same seed "
                            "gives the same scores on CPU (default: %(default)s)")
    group.add_argument("--gpus", default="0", metavar="IDS",
                       help="comma-separated GPU ids, or 'cpu' (default: %(default)s; the CPU "
                            "is used when there is no GPU)")


def add_split(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("selection")
    group.add_argument("--threshold", default="0.5", metavar="SCORE|auto",
                       help="keep picks scoring at least this; 'auto' places it in the valley "
                            "of the score histogram (default: %(default)s)")
    group.add_argument("--min-distance", type=float, default=-1.0, metavar="A",
                       help="a retained pick closer than this to a better one is a duplicate "
                            "and goes to pruned.star; -1: %.0f%%%% of the box, 0: keep "
                            "duplicates (default: %%(default)s)" % (100 * DEFAULT_MIN_DISTANCE))
    group.add_argument("--edge-margin", type=float, default=-1.0, metavar="A",
                       help="a pick closer than this to the edge of its micrograph's data (a "
                            "padded border of repeated rows or columns counts as outside) is a "
                            "particle cut by the edge and goes to pruned.star; -1: %.0f%%%% of "
                            "the box (about a particle radius), 0: keep them (default: "
                            "%%(default)s)"
                            % (100 * DEFAULT_EDGE_MARGIN))
    group = parser.add_argument_group(
        "evaluation", "Picks you know (a few hundred picked or rejected by hand, in any of "
                      "--picks' formats): the summary gives the precision, recall and ROC-AUC "
                      "of the scores on them, so a threshold can be trusted without other "
                      "ground truth.")
    group.add_argument("--known-good", metavar="PICKS",
                       help="picks known to be particles")
    group.add_argument("--known-bad", metavar="PICKS",
                       help="picks known not to be particles (ice, carbon, contamination)")


# ------------------------------------------------------------------ reading the inputs

def parse_gpus(text: str) -> List[int]:
    if text.strip().lower() in ("", "cpu", "none"):
        return []
    try:  # Scipion's %(GPU)s gives space-separated ids
        return [int(g) for g in text.replace(",", " ").split()]
    except ValueError:
        raise InputError("--gpus %r: give comma-separated GPU ids or 'cpu'" % text) from None


def parse_threshold(text: str) -> Optional[float]:
    """The threshold flag: a score in [0, 1], or None for 'auto'."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError("--threshold %r: give a score in [0, 1] or 'auto'" % text) from None
    for _, _, text_range in parameters.out_of_range({"threshold": value}):
        raise InputError("--threshold %s: a score must be %s" % (text, text_range))
    return value


def check_ranges(args) -> None:
    """Refuse the flags outside their ranges (:mod:`.core.parameters`, which the Scipion
    form checks too), all in one message, before the command reads or trains anything."""
    problems = []
    if getattr(args, "threshold", None) is not None:
        try:
            parse_threshold(args.threshold)
        except InputError as error:
            problems.append(str(error))
    names = [n for n in (*parameters.RANGES, *parameters.INPUT_RANGES) if n != "threshold"]
    values = {name: getattr(args, name, None) for name in names}
    problems += ["--%s %g: must be %s" % (name.replace("_", "-"), value, text)
                 for name, value, text in parameters.out_of_range(values)]
    if problems:
        raise InputError("; ".join(problems))


def _resolve(path: str, root: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(root, path))


def read_micrographs(spec: str, relion_project: str) -> Tuple[List[Micrograph], Optional[
        MicrographList]]:
    """The micrographs of a glob or a RELION micrographs STAR file, and the latter's contents.

    Labels (the names outputs give) are the paths as written (as RELION must see them);
    paths are resolved against the RELION project folder for STAR files.
    """
    if spec.lower().endswith(".star"):
        if not os.path.isfile(spec):
            raise InputError("--micrographs %s: no such file" % spec)
        listing = read_relion_micrographs(spec)
        entries = [(m.name, _resolve(m.path, relion_project), m.path)
                   for m in listing.micrographs]
    else:
        listing = None
        files = sorted(glob.glob(spec))
        if not files:
            raise InputError("--micrographs %r matches no file (quote the glob so the shell "
                             "leaves it to deepconsensus)" % spec)
        entries = [(micrograph_key(f), os.path.abspath(f), f) for f in files]
        names = [name for name, _, _ in entries]
        if len(set(names)) < len(names):
            raise InputError("--micrographs %r: two files have the same name" % spec)
    missing = [path for _, path, _ in entries if not os.path.exists(path)]
    if missing:
        raise InputError("%d micrograph file(s) not found, e.g. %s (run from the RELION "
                         "project folder or give --relion-project)" % (len(missing), missing[0]))
    problems = [(path, format_problem(path)) for _, path, _ in entries]
    unreadable = [(path, problem) for path, problem in problems if problem]
    if unreadable:
        raise InputError("%d of %d micrograph files cannot be read, e.g. %s: %s"
                         % (len(unreadable), len(entries), *unreadable[0]))
    return ([Micrograph(mic_id=i + 1, name=name, path=path, label=label)
             for i, (name, path, label) in enumerate(entries)], listing)


def header_pixel_size(path: str) -> Optional[float]:
    """The pixel size an MRC micrograph's header gives (None for none, or a TIFF file,
    whose tags hold none that cryo-EM software agrees on)."""
    import mrcfile

    if is_tiff(path):
        return None
    try:
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            size = float(mrc.voxel_size.x)
    except Exception as error:  # mrcfile raises ValueError, OSError...
        raise InputError("%s: cannot read the MRC header (%s)" % (path, error)) from error
    return size if size > 0 else None


def picker_names(paths: Sequence[str]) -> List[str]:
    """The name of each ``--picks`` path in the summary, the plots and the run record: the
    path below the folder all of them share.  Relative paths in a RELION project keep
    their job folders (``AutoPick/job006/autopick.star``); absolute ones, or files side by
    side, lose the prefix that tells them nothing.  Where one path is that shared folder
    itself, the paths are kept as given."""
    full = [os.path.abspath(p) for p in paths]
    shared = os.path.commonpath(full) if len(full) > 1 else os.path.dirname(full[0])
    names = [os.path.relpath(f, shared) for f in full]
    if os.curdir in names:
        return [os.path.normpath(p) for p in paths]
    return names


def gather(args) -> Tuple[stages.ConsensusInput, ExportInfo, List[str]]:
    """The consensus input, the export settings and notes for the user, from the flags."""
    micrographs, listing = read_micrographs(args.micrographs, args.relion_project)
    if len(args.picks) < 2:
        raise InputError("give the picks of at least two pickers (--picks A --picks B)")
    notes = []
    pixel = args.pixel_size or (listing.pixel_size if listing else None) \
        or header_pixel_size(micrographs[0].path)
    if not pixel:
        raise InputError("the micrographs' pixel size is unknown: give --pixel-size")
    names = [m.name for m in micrographs]
    ids = {m.name: m.mic_id for m in micrographs}
    centres, box, rescaled, sets = [], None, [], []
    for path in args.picks:
        if not os.path.exists(path):
            raise InputError("--picks %s: no such file or folder" % path)
        picks = read_picks(path, pattern=args.picks_pattern,
                           project_dir=args.relion_project, flip_y=args.flip_y)
        match = match_micrographs(picks, names, file_suffixes=os.path.isdir(path))
        if match.unmatched:
            notes.append("%s: %d micrograph(s) match none of --micrographs (e.g. %s)"
                         % (path, len(match.unmatched), match.unmatched[0]))
        factor = 1.0
        if picks.pixel_size and abs(picks.pixel_size - pixel) > 1e-3 * pixel:
            factor = picks.pixel_size / pixel
            rescaled.append("%s (%.3f A/px)" % (path, picks.pixel_size))
        xy = {ids[n]: rescale(m.xy, picks.pixel_size, pixel) if factor != 1.0 else m.xy
              for n, m in match.picks.micrographs.items()}
        if not any(len(v) for v in xy.values()):
            raise InputError("%s: no pick on any of the %d micrographs (are they the same "
                             "micrographs?)" % (path, len(micrographs)))
        if picks.box_size and box is None:
            box = int(round(picks.box_size * factor))
        centres.append(xy)
        sets.append(picks)
    pickers = [stages.PickerInput(name, xy)
               for name, xy in zip(picker_names(args.picks), centres)]
    box = args.box_size or box
    if not box or box < box_policy.MIN_BOX:
        raise InputError("the box size is unknown: give --box-size (pixels, about 1.5-2 "
                         "particle diameters)")
    if args.diameter < 0 or (args.diameter and args.diameter / pixel > box):
        raise InputError("--diameter %g A (%.0f px at %.3f A/px) is not within the %d px box: "
                         "give the particle diameter in A" % (args.diameter, args.diameter / pixel,
                                                              pixel, box))
    export = _export_settings(args, pixel, box, listing, sets)
    model = model_path(args)
    network = None
    if model is not None and not args.diameter:  # the run works in the network's boxes
        try:
            network = box_policy.network_box(read_spec(model), pixel)
        except ModelFileError as error:
            raise InputError("--model: %s" % error) from error
    boxes = box_policy.run_boxes(box, args.diameter, pixel, network)
    # without a diameter the consensus may fit the box to the particles' spacing, unless a
    # reused network brings the box it was trained in
    inputs = stages.ConsensusInput(micrographs=micrographs, pickers=pickers, box=boxes.box,
                                   sampling_rate=pixel, rescaled_sets=rescaled,
                                   coordinates_box=boxes.coordinates_box,
                                   box_from_network=boxes.from_network,
                                   fit_box=not args.diameter and model is None)
    return inputs, export, notes


def model_path(args) -> Optional[str]:
    """The model file ``--model`` names (a run folder stands for its model.keras); None
    without it (and for the commands that take none)."""
    path = getattr(args, "model", None)
    if path is not None and os.path.isdir(path):
        return RunFolder(path).file(RunFolder.MODEL)
    return path


def _export_settings(args, pixel: float, box: int, listing: Optional[MicrographList],
                     sets: Sequence[PickSet]) -> ExportInfo:
    optics = (listing.optics if listing is not None else None) or next(
        (s.optics for s in sets if s.optics is not None), None)
    voltage = args.voltage or (optics.voltage if optics else None)
    cs = args.cs if args.cs is not None else (optics.spherical_aberration if optics else None)
    if voltage is None or cs is None:
        raise InputError("the voltage and spherical aberration are unknown (RELION needs them in "
                         "the output's optics table): give --voltage and --cs")
    contrast = args.amplitude_contrast if args.amplitude_contrast is not None else (
        optics.amplitude_contrast if optics else None)
    star = args.micrographs if listing is not None else None
    return ExportInfo(pixel_size=pixel, voltage=voltage, spherical_aberration=cs,
                      amplitude_contrast=contrast, box=box, micrographs_star=star)


def method_options(args) -> stages.MethodOptions:
    return stages.MethodOptions.for_method(args.method, args.offcentre_negatives,
                                           not args.no_self_training,
                                           not args.no_combine_votes,
                                           not args.no_best_centred,
                                           not args.no_rotational_average)


def method_info(args) -> MethodInfo:
    options = method_options(args)
    return MethodInfo(method=args.method, offcentre_negatives=options.offcentre_negatives,
                      self_training=options.self_training, combine_votes=options.combine_votes,
                      centring_search=options.centring_search)


# ------------------------------------------------------------------ stage sequences

def progress_bars():
    """A :data:`.stages.ProgressFactory` drawing tqdm bars on the terminal (stderr)."""
    from tqdm import tqdm

    def factory(description: str, total: int, unit: str):
        return tqdm(total=total, desc=description, unit=" " + unit, unit_scale=False,
                    dynamic_ncols=True, leave=True)

    return factory


def run_consensus(args, run: RunFolder) -> None:
    inputs, export, notes = gather(args)
    for note in notes:
        print("Note: " + note)
    run.update_info(export=export)
    stages.consensus_stage(run, inputs, stages.ConsensusParams(
        radius=args.radius, and_rule=args.and_rule, k=args.k))


def reused_model(args, run: RunFolder) -> Optional[str]:
    """The model file of ``--model`` (a run folder stands for its model.keras), checked
    against this run's boxes and flags before anything is extracted; None without it."""
    path = model_path(args)
    if path is None:
        if args.score_only:
            raise InputError("--score-only needs --model: the network to score with")
        return None
    consensus = run.info().consensus
    if consensus is None:
        raise InputError("%s has no consensus: run 'deepconsensus consensus' first" % run.path)
    try:
        spec = read_spec(path)
    except ModelFileError as error:
        raise InputError("--model: %s" % error) from error
    ours = stages.run_model_spec(consensus.box, consensus.sampling_rate, args.network_size,
                                 args.invert_contrast, args.network)
    errors = stages.reuse_errors(spec, ours, "--model %s" % path)
    if errors:
        raise InputError(" ".join(errors))
    return path


def run_training(args, run: RunFolder) -> None:
    """Negatives, extraction, the model (new or reused) and every training round (with the
    scoring a later round needs); no round when a reused model scores alone."""
    model = reused_model(args, run)
    if model is None or not args.score_only:
        stages.require_training_set(run.section("consensus"))
    method = method_info(args)
    run.update_info(method=method)
    progress = progress_bars()
    stages.negatives_stage(run, stages.NegativeParams(
        ratio=args.negative_ratio, distance=args.negative_distance,
        offcentre=method.offcentre_negatives, seed=args.seed,
        skip_bad_micrographs=args.skip_bad_micrographs), known_negatives(run, args))
    stages.extraction_stage(run, stages.ExtractionParams(
        network_size=args.network_size, invert=args.invert_contrast,
        skip_bad_micrographs=args.skip_bad_micrographs,
        rotational_average=method_options(args).rotational_average), progress=progress)
    use = (run_folder.MODEL_NEW if model is None else
           run_folder.MODEL_SCORE_ONLY if args.score_only else run_folder.MODEL_FINE_TUNE)
    stages.model_stage(run, use, model, architecture=args.network)
    if use == run_folder.MODEL_SCORE_ONLY:
        return
    rounds = 2 if method.self_training else 1
    params = stages.TrainingParams(architecture=args.network, max_epochs=args.max_epochs,
                                   patience=args.patience, learning_rate=args.learning_rate,
                                   batch_size=args.batch_size, seed=args.seed, rounds=rounds,
                                   epoch_particles=args.epoch_particles)
    stages.training_rounds(run, params, gpus=parse_gpus(args.gpus), progress=progress)


def run_scoring(args, run: RunFolder) -> None:
    """Score with the last round's network and rank (combined with the votes or not)."""
    info = run.info()
    if info.method is None or (info.training is None and info.model is None):
        raise InputError("%s has no trained network: run 'deepconsensus train' first"
                         % run.path)
    rounds = stages.scoring_round(info)
    stages.scoring_stage(run, rounds, rounds, seed=args.seed, gpus=parse_gpus(args.gpus),
                         progress=progress_bars(), centring_search=info.method.centring_search)
    stages.ranking_stage(run, info.method.combine_votes)


def run_split(args, run: RunFolder) -> None:
    """Cut the scores and write the STAR and CSV files."""
    info = run.info()
    if info.ranking is None or info.consensus is None:
        raise InputError("%s has no scores: run 'deepconsensus score' first" % run.path)
    distance, margin = box_policy.split_lengths_px(info.consensus, args.min_distance,
                                                   args.edge_margin)
    split = stages.split_stage(run, parse_threshold(args.threshold), distance, margin)
    stages.export_stage(run, split)
    stages.evaluation_stage(run, known_picks(run, args.known_good, "--known-good"),
                            known_picks(run, args.known_bad, "--known-bad"))


def known_picks(run: RunFolder, path: Optional[str],
                flag: str) -> Optional[pipeline.CoordinateTable]:
    """Known good or bad picks in the run's micrograph ids and pixel size (None: not given)."""
    if path is None:
        return None
    if not os.path.exists(path):
        raise InputError("%s %s: no such file or folder" % (flag, path))
    micrographs = run.micrographs().values()
    picks = read_picks(path)
    match = match_micrographs(picks, [m.name for m in micrographs],
                              file_suffixes=os.path.isdir(path))
    pixel = run.info().consensus.sampling_rate
    ids = {m.name: m.mic_id for m in micrographs}
    known = {ids[n]: rescale(m.xy, picks.pixel_size, pixel)
             if picks.pixel_size and pixel else m.xy
             for n, m in match.picks.micrographs.items()}
    if not any(len(xy) for xy in known.values()):
        raise InputError("%s %s: no pick on any of the run's %d micrographs"
                         % (flag, path, len(ids)))
    return pipeline.CoordinateTable.from_picks(known)


def known_negatives(run: RunFolder, args) -> Optional[pipeline.CoordinateTable]:
    """``--known-negatives`` in the run's micrographs and pixel size (None: not given),
    refused where they lie on one picker's picks (:func:`.negatives.picker_particles`):
    that picker's particles, which would teach the network that particles are background
    (the form refuses them alike)."""
    known = known_picks(run, args.known_negatives, "--known-negatives")
    if known is None:
        return None
    consensus, table = run.info().consensus, run.consensus()

    def by_micrograph(picks: pipeline.CoordinateTable):
        return {mic: picks.xy[rows] for mic, rows in picks.per_micrograph()}

    theirs = by_micrograph(known)
    for p, name in enumerate(consensus.picker_names):
        picked = by_micrograph(table.subset(np.flatnonzero(table.voters[:, p])))
        on_picks = picker_particles(theirs, picked, consensus.radius_px)
        if on_picks is not None:
            raise InputError("--known-negatives %s: %d of the %d known negatives on the "
                             "micrographs they share with %s lie within the consensus radius "
                             "of its picks: they are particles, not the non-particles (ice, "
                             "carbon, contamination) known negatives must be"
                             % (args.known_negatives, *on_picks, name))
    return known


WHAT_FILES_ARE = {
    RunFolder.RETAINED_STAR: "the retained particles: RELION Extract (or Subset selection) / "
                             "cryoSPARC Import Particle Stack",
    RunFolder.PRUNED_STAR: "the pruned picks (duplicates and edge picks included), to check "
                           "what was removed",
    RunFolder.PICKS_CSV: "every pick with its score, votes and verdict",
}


def print_summary(run: RunFolder) -> None:
    """The run's summary (as Scipion shows it) and the files to import back."""
    info = run.info()
    print()
    for line in run_summary.summary_lines(info):
        print(line)
    if info.export is not None and info.export.files:
        print("\nOutput files:")
        for path in info.export.files:
            name = os.path.basename(path)
            what = WHAT_FILES_ARE.get(name)
            if what is None and name.startswith("coords_suffix_"):
                what = "RELION 3.1 Extract: 'Input coordinates'"
            elif what is None:
                what = ("the retained particles' coordinate files, one per micrograph: "
                        "RELION 4/5 Extract: 'Input coordinates'")
            print("  %s\n      %s" % (path, what))
