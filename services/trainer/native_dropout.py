"""torch's CPU dropout noise from a small C kernel: the same draws, far faster.

torch draws CPU dropout noise (`bernoulli_(1 - p)`) one element at a time from
its MT19937 engine, two engine outputs per element; in a LoRA training step on
a CPU that serial loop costs about a sixth of the step (seven adapted modules
per layer, each drawing a mask the size of its input). `native/mt_dropout.c`
draws the same outputs from the same generator state in vectorised blocks, so
every mask, every dropped value and the generator state afterwards are exactly
torch's: a trained adapter keeps its sha256.

The kernel is plain C, compiled on first use with the machine's C compiler
(`$CC`, else Python's, else `cc`) into a private cache named by the source's
hash, and called through ctypes, as Triton and torch's own C++ extensions
build theirs: the lorafleet wheel stays pure Python (the client SDK installs
anywhere), and a machine without a compiler still trains, with torch's kernel.

"Exactly" is checked, not assumed: before first use `available()` draws masks
both ways on a private generator (from a fresh seed and from mid-block, sizes
that cross the engine's 624-word blocks) and compares masks, values and the
state afterwards. When the kernel cannot be built or disagrees (a torch that
draws differently), the caller keeps torch's own dropout: slower, never
different.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import math
import os
import platform
import shlex
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native") / "mt_dropout.c"
CACHE_ENV = "LORAFLEET_NATIVE_CACHE"
ABI_VERSION = 1
FLAGS = ("-O3", "-shared", "-fPIC")
COMPILE_TIMEOUT_S = 120.0


def _compiler() -> list[str]:
    configured = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(configured)


def _cache_dir() -> Path:
    """A directory only this user can write to: a shared-library cache others
    could write into would let them run code in the trainer."""
    configured = os.environ.get(CACHE_ENV)
    base = Path(configured) if configured else Path.home() / ".cache" / "lorafleet"
    path = base / "native"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = path.stat()
        if info.st_uid == os.getuid() and not info.st_mode & 0o022:
            return path
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="lorafleet-native-"))


def _build() -> Path | None:
    """The compiled kernel, built now unless the cache has this source's."""
    compiler = _compiler()
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join(
            [
                source,
                " ".join(compiler + list(FLAGS)).encode(),
                platform.machine().encode(),
            ]
        )
    ).hexdigest()[:16]
    cache = _cache_dir()
    target = cache / f"mt_dropout-{key}.so"
    if target.is_file():
        return target
    fd, partial = tempfile.mkstemp(dir=cache, suffix=".so.partial")
    os.close(fd)
    try:
        done = subprocess.run(
            [*compiler, *FLAGS, "-o", partial, str(SOURCE)],
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_S,
        )
        if done.returncode != 0:
            log.info(
                "could not compile %s (%s): %s",
                SOURCE.name,
                " ".join(compiler),
                done.stderr.strip()[-500:],
            )
            return None
        os.replace(partial, target)  # concurrent builders: the last one wins
        return target
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("could not compile %s with %s: %s", SOURCE.name, compiler, exc)
        return None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


@functools.cache
def _library() -> Any | None:
    """The loaded kernel, or None where it cannot be built or loaded."""
    path = _build()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        log.info("could not load %s: %s", path, exc)
        return None
    lib.lf_abi_version.restype = ctypes.c_int
    if lib.lf_abi_version() != ABI_VERSION:
        return None
    size, ptr = ctypes.c_size_t, ctypes.c_void_p
    lib.lf_dropout.restype = ctypes.c_int
    lib.lf_dropout.argtypes = [
        ptr,
        size,
        ptr,
        ptr,
        ptr,
        size,
        ctypes.c_uint64,
        ctypes.c_float,
    ]
    lib.lf_scale_by_mask.restype = None
    lib.lf_scale_by_mask.argtypes = [ptr, ptr, ptr, size, ctypes.c_float]
    return lib


def keep_threshold(keep_probability: float) -> int:
    """torch keeps an element when u < q for u = v * 2**-53, v a 53-bit
    integer; v * 2**-53 is exact, so that is v < ceil(q * 2**53)."""
    return math.ceil(keep_probability * 2.0**53)


def kept_scale(p: float) -> float:
    """The value a kept element's noise has: 1 / (1 - p) as `div_` computes
    it in float32 (the dtype the native path runs in)."""
    import torch

    return float(torch.ones((), dtype=torch.float32).div_(1 - p))


def usable_for(x: Any) -> bool:
    """Whether `x` can take the native path (contiguous float32 on the CPU)."""
    import torch

    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.is_contiguous()
        and available()
    )


def _draw(lib: Any, generator: Any, x: Any, p: float) -> tuple[Any, Any]:
    import torch

    x = x.detach().contiguous()
    state = generator.get_state()
    dropped = torch.empty_like(x)
    keep = torch.empty(x.shape, dtype=torch.bool)
    status = lib.lf_dropout(
        state.data_ptr(),
        state.numel(),
        x.data_ptr(),
        dropped.data_ptr(),
        keep.data_ptr(),
        x.numel(),
        keep_threshold(1 - p),
        kept_scale(p),
    )
    if status != 0:
        raise ValueError(
            f"native dropout refused the generator state (status {status}): "
            "not the MT19937 layout it reads"
        )
    generator.set_state(state)
    return dropped, keep


def dropout(x: Any, p: float) -> tuple[Any, Any]:
    """(x * noise, noise != 0) with torch's noise for `F.dropout(x, p)`, drawn
    from the default CPU generator, which is left where torch would leave it.

    Only for inputs `usable_for` accepts.
    """
    import torch

    return _draw(_library(), torch.default_generator, x, p)


def scale_by_mask(t: Any, keep: Any, p: float) -> Any:
    """t * noise for the noise whose non-zeros `keep` marks (dropout's
    backward, and the dropped input rebuilt from a saved mask)."""
    return _scale(_library(), t, keep, p)


def _scale(lib: Any, t: Any, keep: Any, p: float) -> Any:
    import torch

    t = t.detach().contiguous()
    keep = keep.contiguous()
    out = torch.empty_like(t)
    lib.lf_scale_by_mask(
        t.data_ptr(), keep.data_ptr(), out.data_ptr(), t.numel(), kept_scale(p)
    )
    return out


@functools.cache
def available() -> bool:
    """True when the kernel is built and draws exactly what torch draws."""
    lib = _library()
    if lib is None:
        log.info(
            "the native dropout kernel is not available (no C compiler?): "
            "LoRA dropout uses torch's own, slower CPU kernel"
        )
        return False
    problem = _disagreement(lib)
    if problem:
        log.warning(
            "native dropout disabled: it does not draw what this torch draws "
            "(%s); LoRA dropout uses torch's own CPU kernel",
            problem,
        )
        return False
    return True


def _disagreement(lib: Any) -> str | None:
    """What differs between the native draws and torch's, or None."""
    import torch

    generator = torch.Generator().manual_seed(20261205)
    # A fresh seed (the engine twists first), then mid-block positions, odd
    # sizes and sizes spanning several 624-output blocks.
    for size, p in ((5, 0.05), (1, 0.5), (313, 0.1), (4099, 0.05), (1000, 0.9)):
        x = torch.randn(size, generator=torch.Generator().manual_seed(size))
        x[0] = -0.0
        start = generator.get_state()
        noise = torch.empty_like(x).bernoulli_(1 - p, generator=generator)
        noise.div_(1 - p)
        expected, expected_state = x * noise, generator.get_state()
        generator.set_state(start)
        try:
            dropped, keep = _draw(lib, generator, x, p)
        except ValueError as exc:
            return str(exc)
        if not torch.equal(keep, noise != 0):
            return f"masks differ ({size} elements, p={p})"
        if not torch.equal(dropped.view(torch.int32), expected.view(torch.int32)):
            return f"dropped values differ ({size} elements, p={p})"
        if not torch.equal(generator.get_state(), expected_state):
            return "the generator state afterwards differs"
        out = _scale(lib, x, keep, p)
        if not torch.equal(out.view(torch.int32), expected.view(torch.int32)):
            return "scale_by_mask differs from x * noise"
    return None
