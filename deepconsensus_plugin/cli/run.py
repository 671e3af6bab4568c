"""deepconsensus run: prune picks from start to end (consensus, training, scoring, split)."""
from . import common
from ..core.run_folder import RunFolder

HELP = "prune false-positive picks: every stage, from the pickers' files to STAR files"
DESCRIPTION = """Merge the picks of two or more pickers, train a network on the particles
most pickers agree on, score every pick, and write retained.star, pruned.star, per-micrograph
coordinate STAR files and picks.csv into the run folder. Afterwards, 'deepconsensus split'
re-thresholds the run in seconds without retraining."""


def add_args(parser):
    common.add_out(parser, new=True)
    common.add_inputs(parser)
    common.add_consensus(parser)
    common.add_method(parser)
    common.add_training(parser)
    common.add_split(parser)
    common.add_seed_and_gpus(parser)


def main(args):
    run = RunFolder(args.out)
    common.run_consensus(args, run)
    common.run_training(args, run)
    common.run_scoring(args, run)
    common.run_split(args, run)
    common.print_summary(run)
