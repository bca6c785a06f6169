"""The unified feature set: one definition for model training (batch) and serving (streaming).

``compute_batch`` turns a history of 5-minute OHLCV bars into a frame of features for
training; ``StreamingFeatures`` produces the same numbers bar by bar in the
feature-publisher. The features that read several symbols (BTC's state, the beta to BTC,
cross-sectional ranks) and the market context of ticks (funding, mark) come from
``compute_universe`` (batch) and ``UniverseFeatures`` (streaming); ``stream_tables`` runs the
streaming path over data files for a backtest. ``SCHEMA_HASH`` identifies the definition and
travels with every feature vector and every trained model. See ``docs/features.md`` for each
formula.
"""

from quantum.features.batch import compute_batch
from quantum.features.schema import (
    CONTEXT_NAMES,
    CROSS_NAMES,
    FEATURE_NAMES,
    PARAMETERS,
    SCHEMA_HASH,
    SCHEMA_VERSION,
    WARMUP_BARS,
    FeatureParameters,
    feature_names,
    schema_hash,
)
from quantum.features.streaming import StreamingFeatures
from quantum.features.universe import (
    TickContext,
    UniverseFeatures,
    compute_universe,
    stream_tables,
    symbol_frame,
)

__all__ = [
    "CONTEXT_NAMES",
    "CROSS_NAMES",
    "FEATURE_NAMES",
    "PARAMETERS",
    "SCHEMA_HASH",
    "SCHEMA_VERSION",
    "WARMUP_BARS",
    "FeatureParameters",
    "StreamingFeatures",
    "TickContext",
    "UniverseFeatures",
    "compute_batch",
    "compute_universe",
    "feature_names",
    "schema_hash",
    "stream_tables",
    "symbol_frame",
]
