"""Settings a headless Scipion run needs, for the demo, the benchmarks and the tests.

pyworkflow reads its configuration from the environment once, when it is
first imported, and protocols run in child processes that inherit it.  So
:func:`configure` must run before anything imports pyworkflow or pwem; values
already set in the environment win.
"""
from __future__ import annotations

import os
import sys
import warnings

HOSTS_CONF = ("[localhost]\n"
              "PARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d --map-by node %_(COMMAND)s\n")


def configure(user_data: str | None = None) -> str:
    """Set the Scipion environment for a run without a Scipion installation.

    Returns the folder where Scipion keeps projects (``SCIPION_USER_DATA``).
    """
    if "pyworkflow" in sys.modules:
        warnings.warn("pyworkflow was imported before headless.configure(); "
                      "its configuration may not follow these settings")
    os.environ.setdefault("SCIPION_DOMAIN", "pwem")
    data = os.environ.setdefault(
        "SCIPION_USER_DATA",
        os.path.abspath(user_data or os.path.expanduser("~/ScipionUserData")))
    os.makedirs(data, exist_ok=True)
    hosts = os.path.join(data, "hosts.conf")
    if "SCIPION_HOSTS" not in os.environ:
        if not os.path.exists(hosts):
            with open(hosts, "w") as handle:
                handle.write(HOSTS_CONF)
        os.environ["SCIPION_HOSTS"] = hosts
    os.environ.setdefault("SCIPION_PYTHON", sys.executable)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return data


def main(argv: list[str] | None = None) -> None:
    """``python -m deepconsensus_plugin.headless COMMAND ...``: run COMMAND in that environment.

    Lets Scipion's own tools (``pyworkflow.apps.pw_run_tests``, ``pw_project``)
    run headless without writing the variables by hand.
    """
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: python -m deepconsensus_plugin.headless COMMAND [ARGS...]")
    configure()
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
