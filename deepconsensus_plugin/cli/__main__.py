"""``python -m deepconsensus_plugin.cli``: the ``deepconsensus`` command."""
import sys

from . import main

sys.exit(main())
