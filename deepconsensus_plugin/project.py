"""Open a Scipion project's window after a plain ``pip`` install.

``deepconsensus-project NAME`` (or ``python -m deepconsensus_plugin.project NAME``)
sets the environment :func:`deepconsensus_plugin.headless.configure` sets
(``SCIPION_USER_DATA`` as the user has it, else ``~/ScipionUserData``) and
opens pyworkflow's project window on the existing project NAME.

Scipion's own ``scipion3 project NAME`` comes with the ``scipion-app``
package, which a pip install of this plugin does not bring.  pyworkflow's
``python -m pyworkflow.apps.pw_project NAME`` opens the window in its own
process only when Python runs optimised (``-O``) or in debug mode; otherwise
it starts ``python -O -m scipion project NAME``, a module of ``scipion-app``
("No module named scipion").  The window itself needs neither: this opens it
in-process, as pw_project does under ``-O``.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import headless


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="deepconsensus-project",
        description="Open a Scipion project in Scipion's project window.")
    parser.add_argument("project", help="the project's name (a folder under "
                                        "$SCIPION_USER_DATA/projects), or its folder")
    parser.add_argument("--user-data", default=None,
                        help="Scipion's user-data folder (default: $SCIPION_USER_DATA or "
                             "~/ScipionUserData)")
    return parser.parse_args(argv)


def project_path(name: str) -> str:
    """The folder of project ``name``: a project folder as given, else one of the Manager's."""
    from pyworkflow.project import Manager

    if os.path.isfile(os.path.join(name, "project.sqlite")):
        return os.path.abspath(name)
    manager = Manager()
    path = manager.getProjectPath(name)
    if not os.path.isdir(path):
        known = [info.projName for info in manager.listProjects()]
        raise SystemExit("No Scipion project %r in %s. Projects there: %s"
                         % (name, manager.PROJECTS, ", ".join(known) or "none"))
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    headless.configure(args.user_data)
    path = project_path(args.project)
    from pyworkflow.gui.project import ProjectWindow

    ProjectWindow(path).show()
    return 0


if __name__ == "__main__":
    sys.exit(main())
