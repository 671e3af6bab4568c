"""Deep Consensus for Scipion: prune false-positive particle picks by consensus and a CNN.

Scipion finds this package through the ``pyworkflow.plugin`` entry point and
collects its protocols, viewers and wizards from the sub-packages of the same
names.  The numerical work lives in :mod:`deepconsensus_plugin.core`, which
imports nothing from Scipion; the ``Plugin`` class is therefore loaded only
when Scipion asks for it, so that the core, the benchmarks and the demo can be
imported (and can configure a headless Scipion) before pyworkflow starts.
"""

__version__ = "0.1.0"
URL = "https://pypi.org/project/scipion-em-deepconsensus/"
"""The plugin's page, which every run's log names (pwem.Plugin's default is pwem's)."""
_logo = ""
_references = ["SanchezGarcia2018"]


def __getattr__(name: str):
    if name == "Plugin":
        globals()["Plugin"] = _definePlugin()
        return globals()["Plugin"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _definePlugin():
    """Define the Scipion ``Plugin`` class on first use (it must belong to this module)."""
    import pwem

    class Plugin(pwem.Plugin):
        """Scipion plugin entry.

        Deep Consensus needs no external binaries: TensorFlow comes from pip
        with the package, so there are no variables or binaries to define.
        """

        _url = URL

        @classmethod
        def _defineVariables(cls) -> None:
            """Nothing to configure: the plugin runs on the Python it is installed in."""

    Plugin.__qualname__ = "Plugin"
    return Plugin
