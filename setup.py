"""Packaging for the Deep Consensus Scipion plugin.

The Scipion layer installs on Python 3.8 (scipion-installer's default); the
heavy stages run as jobs on Python >= 3.9 with TensorFlow.  On Python >= 3.9
TensorFlow comes with the package and the jobs use Scipion's own Python; on
3.8 it is left out and ``scipion installb deepconsensus`` creates the jobs'
virtualenv (see the Plugin class).  pyworkflow pins numpy 1.26, so install
with ``constraints.txt`` (see README.rst) to keep pip from upgrading numpy
under Scipion when it resolves TensorFlow.
"""
from setuptools import find_packages, setup

setup(
    name="scipion-em-deepconsensus",
    version="0.1.0",
    description="Deep Consensus particle pruning for Scipion on current TensorFlow",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    url="https://pypi.org/project/scipion-em-deepconsensus/",
    license="GPLv3",
    python_requires=">=3.8",
    packages=find_packages(include=["deepconsensus_plugin", "deepconsensus_plugin.*"]),
    package_data={
        "deepconsensus_plugin": [
            "protocols.conf",
            "demo_data/*.md",
            "demo_data/micrographs/*.mrc",
            "demo_data/coordinates/*/*.box",
            "demo_data/ground_truth/*.csv",
            "templates/*.json.template",
        ],
    },
    install_requires=[
        "scipion-pyworkflow>=3.11",
        "scipion-em>=3.11",
        "numpy>=1.23",
        "scipy>=1.9",
        "mrcfile>=1.4",
        "tifffile>=2020.9",  # TIFF micrographs (core.extraction); also a scipion-em dependency
        "starfile>=0.5.13; python_version >= '3.9'",
        "starfile>=0.4.11; python_version < '3.9'",  # 0.5.13 on needs pandas 2.1 (3.9+)
        "tensorflow>=2.16; python_version >= '3.9'",
        # core.training.fit_batches hands Keras' train function its batches as a Python
        # iterable, which Keras' TensorFlow trainer takes from 3.7 on (3.6 calls next() on it)
        "keras>=3.7; python_version >= '3.9'",
        "tqdm>=4.60",
    ],
    extras_require={"test": ["pytest>=7", "hypothesis>=6", "vermin>=1.9"]},
    entry_points={"pyworkflow.plugin": ["deepconsensus_plugin = deepconsensus_plugin"],
                  "console_scripts": ["deepconsensus = deepconsensus_plugin.cli:main",
                                      "deepconsensus-project = "
                                      "deepconsensus_plugin.project:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Bio-Informatics",
    ],
)
