"""Scipion viewers of the Deep Consensus plugin."""
from .viewer_deep_consensus import DeepConsensusViewer

__all__ = ["DeepConsensusViewer"]
