"""deepconsensus score: score every pick with the trained network and rank them."""
from . import common
from ..core.run_folder import RunFolder

HELP = "score every pick with the trained network (after 'train')"
DESCRIPTION = """Score every pick with the network 'deepconsensus train' trained (and, with
the agreement method, combine the score with the pickers' votes). Continue with
'deepconsensus split'."""


def add_args(parser):
    common.add_out(parser)
    common.add_seed_and_gpus(parser)


def main(args):
    run = RunFolder(args.out)
    common.run_scoring(args, run)
    common.print_summary(run)
