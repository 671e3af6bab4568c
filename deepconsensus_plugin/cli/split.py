"""deepconsensus split: cut a scored run at a threshold and write the STAR files."""
from . import common
from ..core.run_folder import RunFolder

HELP = "cut the scores at a threshold and write the STAR files (seconds, no retraining)"
DESCRIPTION = """Split the scored picks of a run folder into retained (score at least the
threshold, no duplicate, clear of the micrograph edge) and pruned, and write retained.star,
pruned.star, the coordinate STAR files and picks.csv again. Use it to try another threshold
on a finished run."""


def add_args(parser):
    common.add_out(parser)
    common.add_split(parser)


def main(args):
    run = RunFolder(args.out)
    common.run_split(args, run)
    common.print_summary(run)
