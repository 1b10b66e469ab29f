"""tunelab: instruction fine-tuning of seq2seq and causal language models, and measuring what it buys.

The Python API mirrors the CLI:

    import tunelab
    cfg = tunelab.load_config("configs/dialogsum_lora.yaml", ["training.max_steps=20"])
    result = tunelab.finetune(cfg)            # tunelab train
    out, metrics = tunelab.evaluate(result.run_dir)   # tunelab eval RUN_DIR
    session = tunelab.open_for_generation(run=result.run_dir)
    print(tunelab.summarize(session, ["#Person1#: Hi ..."]))  # tunelab generate
"""

import logging as _logging

# bitsandbytes warns at import on CPUs with AVX512-BF16 that an optional hub-downloaded kernel is missing;
# its own fallback kernel is used and the warning only adds noise to every command.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

from tunelab.native import bound_kernel_caches as _bound_kernel_caches

_bound_kernel_caches()  # before torch's first matrix product in this process (tunelab/native.py)

from typing import TYPE_CHECKING as _TYPE_CHECKING

from tunelab.errors import ConfigError, DataError, ModelError, RunDirError, TrainingError, TunelabError
from tunelab.lazy import lazy_exports as _lazy_exports

# Everything else loads on first use (PEP 562), so `import tunelab`, config validation and `tunelab --help`
# do not import torch, transformers or peft.
_LAZY = {
    "ExperimentConfig": "tunelab.config",
    "build_config": "tunelab.config",
    "load_config": "tunelab.config",
    "pull_model": "tunelab.models.registry",
    "benchmark_session": "tunelab.recipes",
    "compare": "tunelab.recipes",
    "evaluate": "tunelab.recipes",
    "measure_forgetting": "tunelab.recipes",
    "finetune": "tunelab.recipes",
    "merge_run": "tunelab.recipes",
    "open_for_generation": "tunelab.recipes",
    "soft_prompt_neighbours": "tunelab.recipes",
    "summarize": "tunelab.recipes",
    "export_run": "tunelab.recipes",
    "sweep": "tunelab.recipes",
    "preview_data": "tunelab.data.preview",
}


__getattr__ = _lazy_exports(__name__, _LAZY)


if _TYPE_CHECKING:
    from tunelab.config import ExperimentConfig, build_config, load_config
    from tunelab.models.registry import pull_model
    from tunelab.recipes import (
        benchmark_session,
        compare,
        evaluate,
        finetune,
        measure_forgetting,
        merge_run,
        open_for_generation,
        export_run,
        soft_prompt_neighbours,
        summarize,
        sweep,
    )
    from tunelab.data.preview import preview_data

__version__ = "0.1.0"
__all__ = [
    "ConfigError",
    "DataError",
    "ExperimentConfig",
    "ModelError",
    "RunDirError",
    "TrainingError",
    "TunelabError",
    "benchmark_session",
    "build_config",
    "compare",
    "evaluate",
    "measure_forgetting",
    "finetune",
    "load_config",
    "merge_run",
    "open_for_generation",
    "pull_model",
    "soft_prompt_neighbours",
    "summarize",
    "export_run",
    "sweep",
    "preview_data",
]
