"""Deep Consensus for Scipion: prune false-positive particle picks by consensus and a CNN.

Scipion finds this package through the ``pyworkflow.plugin`` entry point and
collects its protocols, viewers and wizards from the sub-packages of the same
names.  The numerical work lives in :mod:`deepconsensus_plugin.core`, which
imports nothing from Scipion.
"""
import pwem

__version__ = "0.1.0"
_logo = ""
_references = ["SanchezGarcia2018"]


class Plugin(pwem.Plugin):
    """Scipion plugin entry.

    Deep Consensus needs no external binaries: TensorFlow comes from pip with
    the package, so there are no environment variables or binaries to define.
    """

    @classmethod
    def _defineVariables(cls) -> None:
        """Nothing to configure: the plugin runs on the Python it is installed in."""
