"""deepconsensus job: one piece of a stage on a run folder, as Scipion's protocol runs them.

Scipion's protocol runs the heavy stages as jobs of this command in the plugin's
environment (the one with TensorFlow), so that its own process needs no
TensorFlow and Scipion's executors can run the pieces in parallel threads or
submit each to a cluster queue.  Extraction is cut into shards of micrographs and
scoring into shards of particles; each shard writes its own files, and the merges
check that the shards cover every row exactly once.  A user can run them too, e.g.
to spread a large run over cluster jobs by hand.
"""

from . import common
from ..core import shards, stages
from ..core.model import ARCHITECTURES
from ..core.run_folder import KnownParticles, RunFolder

HELP = "one piece of a stage (shards of extraction and scoring, a training round): " \
       "what Scipion runs as jobs"
DESCRIPTION = """Run one piece of a stage on a run folder: 'check' reports the Python,
TensorFlow and GPUs of this environment; 'extract' one shard of micrographs, 'merge-extraction'
the shards into the run's stacks; 'train' one round; 'score' one shard of particles,
'merge-scores' the shards into the round's scores."""


def _shard(group) -> None:
    group.add_argument("--shard", type=int, required=True, metavar="K",
                       help="which shard, from 1 to --shards")
    _shards(group)


def _shards(group) -> None:
    group.add_argument("--shards", type=int, required=True, metavar="N",
                       help="the number of shards the stage is cut into")


def _extraction(group) -> None:
    group.add_argument("--network-size", type=int, required=True, metavar="PX")
    group.add_argument("--invert-contrast", action="store_true")
    group.add_argument("--skip-bad-micrographs", action="store_true")


def _round(group) -> None:
    group.add_argument("--round", type=int, required=True, dest="round_number")
    group.add_argument("--rounds", type=int, required=True)


def _computing(group) -> None:
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--gpus", default="cpu", metavar="IDS",
                       help="GPU ids (comma- or space-separated) or 'cpu' (default)")


def add_args(parser) -> None:
    pieces = parser.add_subparsers(dest="piece", metavar="PIECE", required=True)
    check = pieces.add_parser("check", help="Python, TensorFlow and the GPUs it sees, into "
                                            "the run folder's environment.json")
    common.add_out(check)
    check.add_argument("--gpus", default="cpu", metavar="IDS")
    extract = pieces.add_parser("extract", help="extract one shard of micrographs")
    common.add_out(extract)
    _shard(extract)
    _extraction(extract)
    merge = pieces.add_parser("merge-extraction", help="the extraction shards into the stacks")
    common.add_out(merge)
    _shards(merge)
    _extraction(merge)
    merge.add_argument("--no-rotational-average", action="store_true",
                       help="fit no rotational-average discriminant on the merged stacks")
    merge.add_argument("--known-particles", action="store_true",
                       help="add the known non-particle images the run folder lists "
                            "(known_particles.json) after the negatives")
    train = pieces.add_parser("train", help="train one round")
    common.add_out(train)
    _round(train)
    train.add_argument("--network", choices=ARCHITECTURES, required=True)
    for flag, kind in (("--max-epochs", int), ("--patience", int), ("--learning-rate", float),
                       ("--batch-size", int), ("--epoch-particles", int)):
        train.add_argument(flag, type=kind, required=True)
    _computing(train)
    score = pieces.add_parser("score", help="score one shard of particles with a round's "
                                            "network")
    common.add_out(score)
    _round(score)
    _shard(score)
    _computing(score)
    score.add_argument("--centring-search", type=float, default=0.0, metavar="SHARE",
                       help="score each pick as the best of its box and the boxes this share "
                            "of the box around it (default: 0, its own box only)")
    merge_scores = pieces.add_parser("merge-scores", help="the scoring shards into the "
                                                          "round's scores")
    common.add_out(merge_scores)
    _round(merge_scores)
    _shards(merge_scores)


def _extraction_params(args, rotational_average: bool = True) -> stages.ExtractionParams:
    return stages.ExtractionParams(network_size=args.network_size, invert=args.invert_contrast,
                                   skip_bad_micrographs=args.skip_bad_micrographs,
                                   rotational_average=rotational_average)


def main(args) -> None:
    run = RunFolder(args.out)
    if args.piece == "check":
        check(run, common.parse_gpus(args.gpus))
    elif args.piece == "extract":
        shards.extraction_shard_stage(run, args.shard, args.shards, _extraction_params(args))
    elif args.piece == "merge-extraction":
        known = run.known_particles() if args.known_particles else KnownParticles()
        shards.merge_extraction_stage(
            run, args.shards, _extraction_params(args, not args.no_rotational_average), known)
    elif args.piece == "train":
        params = stages.TrainingParams(architecture=args.network, max_epochs=args.max_epochs,
                                       patience=args.patience,
                                       learning_rate=args.learning_rate,
                                       batch_size=args.batch_size, seed=args.seed,
                                       rounds=args.rounds,
                                       epoch_particles=args.epoch_particles)
        _warn_without_gpu(args.gpus)
        stages.training_stage(run, args.round_number, params, gpus=common.parse_gpus(args.gpus))
    elif args.piece == "score":
        _warn_without_gpu(args.gpus)
        shards.scoring_shard_stage(run, args.round_number, args.rounds, args.shard, args.shards,
                                   seed=args.seed, gpus=common.parse_gpus(args.gpus),
                                   centring_search=args.centring_search)
    elif args.piece == "merge-scores":
        shards.merge_scores_stage(run, args.round_number, args.rounds, args.shards)


def check(run: RunFolder, gpus) -> dict:
    """Report this environment into ``environment.json`` and print it (the warning first)."""
    from ..core.runtime import environment_report

    report = environment_report(gpus)
    run.write_json(run.ENVIRONMENT, report)
    if report["warning"]:
        print(report["warning"], flush=True)
    print("Job environment: Python %s (%s), TensorFlow %s, GPUs booked: %s, seen: %s"
          % (report["python_version"], report["python"], report["tensorflow"],
             report["gpus_booked"] or "none", report["gpus_seen"] or "none"), flush=True)
    return report


def _warn_without_gpu(gpus: str) -> None:
    """Check again in each job that books GPUs: a cluster job may land on another node."""
    from ..core.runtime import environment_report

    booked = common.parse_gpus(gpus)
    if booked:
        warning = environment_report(booked)["warning"]
        if warning:
            print(warning, flush=True)
