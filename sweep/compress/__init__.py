"""The compression engine: pruning and quantization methods, their orderings, and the driver."""

from sweep.compress.calibration import Calibration, CalibrationCache, LayerStats, calibration_key
from sweep.compress.config import CompressionConfig, parse_pattern
from sweep.compress.driver import (
    CompressionResult,
    collect_stats,
    compress_model,
    compressible_linears,
)
from sweep.compress.layer import compress_weight, requires_calibration
from sweep.compress.registry import JOINT_PRUNERS, PRUNERS, QUANTIZERS

__all__ = [
    "JOINT_PRUNERS",
    "PRUNERS",
    "QUANTIZERS",
    "Calibration",
    "CalibrationCache",
    "CompressionConfig",
    "CompressionResult",
    "LayerStats",
    "calibration_key",
    "collect_stats",
    "compress_model",
    "compress_weight",
    "compressible_linears",
    "parse_pattern",
    "requires_calibration",
]
