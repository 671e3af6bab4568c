"""The ``deepconsensus`` command: Deep Consensus for RELION and cryoSPARC users.

One module per sub-command (``run``, ``consensus``, ``train``, ``score``,
``split``), each with ``HELP``, ``DESCRIPTION``, ``add_args(parser)`` and
``main(args)``, as cryoDRGN and Topaz lay out theirs.  They all work on a
run folder (``--out``) through the stage functions Scipion's protocol calls
(:mod:`deepconsensus_plugin.core.stages`), so a run can be resumed from any
stage or re-thresholded without retraining.

Bad input ends with one line naming the file (and line) at fault and exit
status 1; ``--debug`` shows the traceback instead.
"""
import argparse
import logging
import os
import sys
import warnings

from . import consensus, job, run, score, split, train

COMMANDS = {"run": run, "consensus": consensus, "train": train, "score": score, "split": split,
            "job": job}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepconsensus",
        description="Deep Consensus (Sanchez-Garcia et al., IUCrJ 2018): prune false-positive "
                    "particle picks by the consensus of several pickers and a neural network. "
                    "'deepconsensus run' does everything; the other commands do one stage on "
                    "a run folder.",
        epilog="Example (RELION): deepconsensus run --micrographs CtfFind/job003/"
               "micrographs_ctf.star --picks AutoPick/job010/autopick.star --picks "
               "External/job012/coords/ --out DeepConsensus/run1")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log what each stage does (epochs, counts, timings)")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")
    parser.add_argument("--error-file", metavar="FILE",
                        help="also write the one-line error to FILE (the Scipion protocol, "
                             "which runs the stages as jobs, reports it from there)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        sub = commands.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        module.add_args(sub)
        sub.set_defaults(handler=module.main)
    return parser


def unrecognized(extra) -> str:
    """argparse's error for arguments no flag takes, with the likely cause where they are
    files: a glob the shell expanded because it was not quoted (``--micrographs *.mrc``
    gives the first file to the flag and the others to nobody)."""
    message = "unrecognized arguments: %s" % " ".join(extra)
    files = [e for e in extra if os.path.isfile(e)]
    if files:
        folder, name = os.path.split(files[0])
        pattern = os.path.join(folder, "*" + os.path.splitext(name)[1])
        message += (" (%d files: the shell expanded a glob that was not quoted; quote it, "
                    "e.g. --micrographs '%s')" % (len(files), pattern))
    return message


def main(argv=None) -> int:
    """Run ``deepconsensus`` with ``argv`` (default: the command line); the exit status."""
    from ..core.coordinate_files import CoordinateFileError
    from ..core.extraction import MicrographError
    from ..core.run_folder import RunFolderError
    from .common import InputError, check_ranges

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.error(unrecognized(extra))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # A job's log is the Scipion run's output log (what the user watches move); the
    # command's own log stays on stderr beside its progress bars.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(message)s",
                        stream=sys.stdout if args.command == "job" else sys.stderr)
    if not args.verbose:  # Keras' advice on tf.data pipelines is not for the user
        warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    try:
        check_ranges(args)  # before hours of training, not after
        args.handler(args)
    except (InputError, CoordinateFileError, MicrographError, RunFolderError,
            FileNotFoundError, ValueError) as error:
        if args.debug:
            raise
        print("deepconsensus %s: error: %s" % (args.command, error), file=sys.stderr)
        if args.error_file:
            with open(args.error_file, "w") as handle:
                handle.write("%s\n" % error)
        return 1
    except KeyboardInterrupt:
        print("deepconsensus %s: interrupted; the stages finished so far are kept in %s"
              % (args.command, args.out), file=sys.stderr)
        return 130
    return 0
