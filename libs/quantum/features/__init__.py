"""The unified feature set: one definition for model training (batch) and serving (streaming).

``compute_batch`` turns a history of 5-minute OHLCV bars into a frame of features for
training; ``StreamingFeatures`` produces the same numbers bar by bar in the
feature-publisher. ``SCHEMA_HASH`` identifies the definition and travels with every feature
vector and every trained model. See ``docs/features.md`` for each formula.
"""

from quantum.features.batch import compute_batch
from quantum.features.schema import (
    FEATURE_NAMES,
    PARAMETERS,
    SCHEMA_HASH,
    SCHEMA_VERSION,
    WARMUP_BARS,
    FeatureParameters,
    feature_names,
    schema_hash,
)
from quantum.features.streaming import StreamingFeatures, stream_table

__all__ = [
    "FEATURE_NAMES",
    "PARAMETERS",
    "SCHEMA_HASH",
    "SCHEMA_VERSION",
    "WARMUP_BARS",
    "FeatureParameters",
    "StreamingFeatures",
    "compute_batch",
    "feature_names",
    "schema_hash",
    "stream_table",
]
