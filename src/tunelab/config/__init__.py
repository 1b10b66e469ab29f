from tunelab.config.loader import build_config, config_to_dict, load_config, parse_override
from tunelab.config.schema import (
    BenchmarksConfig,
    DataConfig,
    EvaluationConfig,
    ExperimentConfig,
    ModelConfig,
    TemplateConfig,
    TrainingConfig,
)

__all__ = [
    "BenchmarksConfig",
    "DataConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "ModelConfig",
    "TemplateConfig",
    "TrainingConfig",
    "build_config",
    "config_to_dict",
    "load_config",
    "parse_override",
]
