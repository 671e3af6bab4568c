"""pytest set-up: a throwaway headless Scipion configuration for the whole session.

pyworkflow reads its configuration once, at first import, so it is set here,
before any test module imports Scipion.
"""
import tempfile

from deepconsensus_plugin import headless

headless.configure(tempfile.mkdtemp(prefix="deepconsensus-tests-"))
