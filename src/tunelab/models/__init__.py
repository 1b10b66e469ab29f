from tunelab.models.loading import LoadedModel, ModelSource, detect_arch, load_model, pick_device, pick_dtype, resolve_source
from tunelab.models.registry import ALIASES, alias_dir, is_pulled, pull_model

__all__ = ["ALIASES", "LoadedModel", "ModelSource", "alias_dir", "detect_arch", "is_pulled", "load_model",
           "pick_device", "pick_dtype", "pull_model", "resolve_source"]
