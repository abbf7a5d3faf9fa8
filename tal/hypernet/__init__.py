"""The TAL hypernetwork and its configuration."""

from tal.hypernet.config import DecoderConfig, EncoderConfig, HypernetConfig, preset
from tal.hypernet.model import TALHypernet

__all__ = ["DecoderConfig", "EncoderConfig", "HypernetConfig", "TALHypernet", "preset"]
