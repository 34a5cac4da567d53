"""STCN's neural network: modules, encoders, decoder, memory read, soft aggregation."""
from stcn.model.aggregation import aggregate, aggregate_logits
from stcn.model.memory import read_memory
from stcn.model.network import STCN, KeyFeatures

__all__ = ["STCN", "KeyFeatures", "aggregate", "aggregate_logits", "read_memory"]
