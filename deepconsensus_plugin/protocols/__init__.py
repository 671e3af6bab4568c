"""Scipion protocols of the Deep Consensus plugin."""
from .outputs import OUTPUT_PRUNED, OUTPUT_RETAINED
from .protocol_deep_consensus import ProtDeepConsensus
from .protocol_import_coordinates import ProtImportPickerCoordinates
from .protocol_threshold import ProtDeepConsensusThreshold

__all__ = ["OUTPUT_PRUNED", "OUTPUT_RETAINED", "ProtDeepConsensus", "ProtDeepConsensusThreshold",
           "ProtImportPickerCoordinates"]
