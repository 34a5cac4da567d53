"""STCN's neural network: modules, encoders, decoder, memory read, soft aggregation."""
from stcn.model.aggregation import aggregate, aggregate_logits
from stcn.model.memory import read_memory
from stcn.model.network import PRESETS, STCN, KeyFeatures, ModelConfig

__all__ = ["STCN", "ModelConfig", "PRESETS", "KeyFeatures", "aggregate", "aggregate_logits", "read_memory"]
