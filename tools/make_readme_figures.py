"""Write the README's pictures from a finished demo project.

    python -m deepconsensus_plugin.demo --user-data /tmp/dcdemo --project DeepConsensusDemo
    xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python tools/make_readme_figures.py /tmp/dcdemo/projects/DeepConsensusDemo

The viewer's figures are drawn by the viewer itself, through the handlers its
eye buttons call, and written headless (Agg).  The screenshots are of the
real Tk windows, the deep-consensus form and the viewer's form, captured
from the (virtual) screen with ImageMagick's ``import``; they need a display,
which ``xvfb-run`` provides, and are skipped with a warning without one.
Pictures are stored as palette PNGs below 200 KB so that the repository stays small.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from deepconsensus_plugin import headless  # noqa: E402  (must precede pyworkflow)

FIGURES = (  # (viewer parameter, file, values of the viewer's form)
    ("showHistogram", "histogram.png", {}),
    ("showTraining", "training.png", {}),
    ("showNearThreshold", "gallery_threshold.png", {"gallerySize": 30}),
    ("showHighest", "gallery_highest.png", {"gallerySize": 20}),
    ("showLowest", "gallery_lowest.png", {"gallerySize": 20}),
    ("showMicrograph", "micrograph.png", {"micrograph": 0}),
    ("showPickers", "pickers.png", {}),
)
SCREENSHOT_DELAY_MS = 4000
MAX_BYTES = 200 * 1024
"""Pictures are committed: each is stored with as few colours as it needs to stay below this."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", help="folder of a finished demo project")
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "images"),
                        help="where to write the PNG files (default: docs/images)")
    parser.add_argument("--dpi", type=int, default=80, help="resolution of the figures")
    return parser.parse_args(argv)


def compact_png(path: str) -> None:
    """Rewrite ``path`` as a palette PNG of 256 colours, or fewer until below MAX_BYTES.

    Plots have few colours and lose nothing; a noisy micrograph needs 32 to
    fit, which still shows every particle and circle.
    """
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    for colors in (256, 128, 64, 32):
        rgb.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if os.path.getsize(path) <= MAX_BYTES:
            break


def load_run(project_folder: str):
    """The project and its finished deep-consensus run."""
    from pyworkflow.project import Manager

    project = Manager().loadProject(os.path.basename(os.path.normpath(project_folder)))
    runs = [p for p in project.getRuns() if p.getClassName() == "ProtDeepConsensus"
            and p.isFinished()]
    if not runs:
        raise SystemExit("%s holds no finished deep-consensus run" % project_folder)
    return project, runs[-1]


def viewer_class(run):
    """The viewer Scipion opens for the run on Analyze Results (found as the GUI finds it)."""
    from pwem import Domain
    from pyworkflow.viewer import DESKTOP_TKINTER

    return Domain.findViewers(run, DESKTOP_TKINTER)[0]


def write_figures(project, run, out: str, dpi: int) -> list[str]:
    from deepconsensus_plugin.core import plots

    written = []
    for param, name, values in FIGURES:
        viewer = viewer_class(run)(project=project)
        viewer.setProtocol(run)
        for key, value in values.items():
            getattr(viewer, key).set(value)
        plotter = viewer._getVisualizeDict()[param](param)[0]
        path = os.path.join(out, name)
        plots.save_png(plotter.getFigure(), path, dpi=dpi)
        plotter.close()
        compact_png(path)
        written.append(path)
    return written


def screenshot_forms(project, run, out: str) -> list[str]:
    """Capture the deep-consensus form and the viewer's form as the user sees them."""
    import pyworkflow.gui.project  # noqa: F401  (FormWindow alone hits a circular import)
    from pyworkflow.gui.form import FormWindow

    written = []
    original_show = FormWindow.show

    def show_and_capture(window, *args, **kwargs):
        def capture():
            window.root.update()
            path = os.path.join(out, window_file)
            geometry = "%dx%d+%d+%d" % (window.root.winfo_width(), window.root.winfo_height(),
                                        window.root.winfo_rootx(), window.root.winfo_rooty())
            subprocess.run(["import", "-window", "root", "-crop", geometry, "+repage", path],
                           check=True)
            compact_png(path)
            written.append(path)
            window.root.quit()  # the form is a Toplevel: destroying it leaves mainloop running
            window.root.destroy()

        window.root.after(SCREENSHOT_DELAY_MS, capture)
        original_show(window, *args, **kwargs)

    FormWindow.show = show_and_capture
    try:
        window_file = "form.png"
        FormWindow("Protocol Run: " + run.getClassLabel(), run, lambda *a: None, None).show()
        window_file = "viewer_form.png"
        viewer_class(run)(project=project).visualize(run)
    finally:
        FormWindow.show = original_show
    return written


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    project_folder = os.path.abspath(args.project)
    headless.configure(os.path.dirname(os.path.dirname(project_folder)))
    os.makedirs(args.out, exist_ok=True)
    project, run = load_run(project_folder)
    os.chdir(project.getPath())
    written = write_figures(project, run, args.out, args.dpi)
    if os.environ.get("DISPLAY"):
        written += screenshot_forms(project, run, args.out)
    else:
        print("No DISPLAY: the form screenshots are skipped (run under xvfb-run)",
              file=sys.stderr)
    for path in written:
        print("%s (%d KB)" % (path, os.path.getsize(path) // 1024))
    return 0


if __name__ == "__main__":
    sys.exit(main())
