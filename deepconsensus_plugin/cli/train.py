"""deepconsensus train: negatives, extraction and training on a run folder's consensus."""
from . import common
from ..core.run_folder import RunFolder

HELP = "extract the boxes and train the network (after 'consensus')"
DESCRIPTION = """Draw background boxes, extract and downsample every box, and train the
network (two rounds with the agreement method). Continue with 'deepconsensus score'."""


def add_args(parser):
    common.add_out(parser)
    common.add_method(parser)
    common.add_training(parser)
    common.add_seed_and_gpus(parser)


def main(args):
    run = RunFolder(args.out)
    common.run_training(args, run)
    common.print_summary(run)
