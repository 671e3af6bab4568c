"""Scipion protocols of the Deep Consensus plugin."""
from .protocol_deep_consensus import OUTPUT_PRUNED, OUTPUT_RETAINED, ProtDeepConsensus
from .protocol_import_coordinates import ProtImportPickerCoordinates
from .protocol_threshold import ProtDeepConsensusThreshold
