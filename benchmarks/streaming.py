"""Streaming latency: micrographs of the demo data arriving at a given rate.

    python benchmarks/streaming.py [--interval 60] [--train-at 150] [--max-epochs 10]

Each demo micrograph (with its three pickers' coordinates) arrives ``--interval``
seconds after the previous one and goes through the core's streaming run
(``deepconsensus_plugin.core.streaming``, what ProtDeepConsensus does with open
inputs) as a batch of one.  Processing times are measured; arrivals are on a virtual
clock, so the benchmark takes the processing time, not the collection time.  Prints,
per micrograph, the latency from its arrival to its coordinates being split into
retained and pruned (micrographs that arrive before the network is trained wait for
it), and the total time of the stream against a batch run that starts when the last
micrograph arrives.  Both use the same settings and seed.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepconsensus_plugin.cli import build_parser  # noqa: E402
from deepconsensus_plugin.cli.common import gather  # noqa: E402
from deepconsensus_plugin.core import box_policy, stages  # noqa: E402
from deepconsensus_plugin.core.run_folder import RunFolder  # noqa: E402
from deepconsensus_plugin.core.streaming import StreamingRun, StreamSettings  # noqa: E402
from deepconsensus_plugin.demo import DEMO_DATA, PICKERS  # noqa: E402


def demo_input():
    """The demo's consensus input, gathered by the command line's own parser and defaults
    (a hand-built namespace fell behind when the command gained --diameter)."""
    argv = ["run", "--micrographs", os.path.join(DEMO_DATA, "micrographs", "*.mrc"),
            "--voltage", "300", "--cs", "2.7", "--out", "unused"]
    for picker in PICKERS:
        argv += ["--picks", os.path.join(DEMO_DATA, "coordinates", picker)]
    inputs, _, _ = gather(build_parser().parse_args(argv))
    return inputs


def settings_from(args, fit_box: bool) -> StreamSettings:
    """The stream's settings; ``fit_box`` as the batch run's consensus input has it."""
    return StreamSettings(training=stages.TrainingParams(max_epochs=args.max_epochs,
                                                         rounds=1, seed=args.seed),
                          negatives=stages.NegativeParams(seed=args.seed),
                          threshold=0.5, train_at=args.train_at, fit_box=fit_box)


def run_stream(inputs, settings, folder, interval):
    """(latency per micrograph name, the stream's end on the virtual clock)."""
    stream = StreamingRun(RunFolder(folder), settings, [p.name for p in inputs.pickers],
                          inputs.box, inputs.sampling_rate)
    clock, arrival, latency = 0.0, {}, {}
    mics = list(inputs.micrographs)
    for i, mic in enumerate(mics):
        arrival[mic.name] = i * interval
        clock = max(clock, arrival[mic.name])
        start = time.perf_counter()
        stream.add_batch([mic], [{mic.mic_id: p.picks.get(mic.mic_id)} for p in inputs.pickers])
        if stream.should_train(inputs_closed=i == len(mics) - 1):
            stream.train()
        clock += time.perf_counter() - start
        for batch in stream.unpublished():
            for name in batch.micrographs:
                latency[name] = clock - arrival[name]
        stream.mark_published(stream.unpublished())
    start = time.perf_counter()
    stream.close()
    return latency, clock + time.perf_counter() - start, stream


def run_batch(inputs, settings, folder):
    start = time.perf_counter()
    run = RunFolder(folder)
    stages.consensus_stage(run, inputs, settings.consensus)
    stages.negatives_stage(run, settings.negatives)
    stages.extraction_stage(run, settings.extraction)
    stages.model_stage(run)
    stages.training_rounds(run, settings.training)
    rounds = settings.training.rounds
    stages.scoring_stage(run, rounds, rounds, seed=settings.training.seed,
                         centring_search=settings.centring_search)
    stages.ranking_stage(run, settings.combine_votes)
    stages.split_stage(run, settings.threshold, *box_policy.split_lengths_px(
        run.info().consensus, settings.min_distance, settings.edge_margin))
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=60.0,
                        help="seconds between two micrographs (default: %(default)s)")
    parser.add_argument("--train-at", type=int, default=150,
                        help="AND particles to train on (default: %(default)s; the demo has "
                             "three micrographs)")
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.disable(logging.WARNING)  # the stages' notes (crowded micrographs) are not figures
    inputs = demo_input()
    settings = settings_from(args, inputs.fit_box)
    with tempfile.TemporaryDirectory() as folder:
        latency, stream_end, stream = run_stream(inputs, settings,
                                                 os.path.join(folder, "stream"), args.interval)
        batch_seconds = run_batch(inputs, settings, os.path.join(folder, "batch"))
        trained_at = stream.state.trained_at_and
    last_arrival = (len(inputs.micrographs) - 1) * args.interval
    print("%d micrographs, one every %.0f s; network trained on %d AND particles"
          % (len(inputs.micrographs), args.interval, trained_at))
    print("%-40s %12s" % ("micrograph", "latency (s)"))
    for mic in inputs.micrographs:
        print("%-40s %12.1f" % (mic.name, latency[mic.name]))
    values = sorted(latency.values())
    print("latency: median %.1f s, max %.1f s" % (values[len(values) // 2], values[-1]))
    print("stream done %.1f s after the first arrival (%.1f s after the last); a batch run "
          "started at the last arrival is done at %.1f s (%.1f s of processing)"
          % (stream_end, stream_end - last_arrival, last_arrival + batch_seconds,
             batch_seconds))


if __name__ == "__main__":
    main()
