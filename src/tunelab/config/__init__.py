from tunelab.config.loader import build_config, config_to_dict, load_config, parse_override
from tunelab.config.schema import (
    DataConfig,
    EvaluationConfig,
    ExperimentConfig,
    ModelConfig,
    TemplateConfig,
    TrainingConfig,
)

__all__ = [
    "DataConfig", "EvaluationConfig", "ExperimentConfig", "ModelConfig", "TemplateConfig", "TrainingConfig",
    "build_config", "config_to_dict", "load_config", "parse_override",
]
