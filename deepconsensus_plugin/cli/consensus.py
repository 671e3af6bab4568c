"""deepconsensus consensus: read the micrographs and picks, merge them into the OR set."""
from . import common
from ..core.run_folder import RunFolder

HELP = "read the inputs and merge the pickers (the first stage of 'run')"
DESCRIPTION = """Read the micrographs and each picker's picks, and merge picks of different
pickers on the same particle. Writes the consensus into the run folder; continue with
'deepconsensus train'."""


def add_args(parser):
    common.add_out(parser, new=True)
    common.add_inputs(parser)
    common.add_consensus(parser)


def main(args):
    run = RunFolder(args.out)
    common.run_consensus(args, run)
    common.print_summary(run)
