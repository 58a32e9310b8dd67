"""A warm start of the compiled path: Inductor's vector-ISA check, passed once, is remembered
across processes. Torch only — copied into standalone exports.

Before its first CPU kernel in a process, Inductor checks each vector instruction set the CPU
advertises (AVX-512 with VNNI, AVX-512, AVX2, ...) by building a probe library and loading it
in a fresh Python process: about 1 s a set on a small machine, each time a training script
starts, even when every kernel comes from the cache — and then uses the first. :func:`known_isa`
runs Inductor's own check of that first set alone (a cold start builds one probe, not three:
3.4 s instead of 8.5 s on a slow day here) once per (torch, compiler, CPU) and, when it passed,
writes a marker beside Inductor's cache; every compile of ctopt's CPU kernels then runs with
``cpp.vec_isa_ok = True`` (Inductor's own switch to skip the probe), which makes Inductor pick
that same first set, so the first process and the later ones share cache entries. Where the
probe failed, where the user chose a set (``cpp.simdlen``, ``ATEN_CPU_CAPABILITY``), where the
machine is not x86, or where torch's internals differ, nothing is patched and Inductor checks
as usual.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys

import torch

__all__ = ["host_identity", "known_isa"]


def known_isa():
    """A context in which Inductor trusts the CPU's advertised vector ISAs, when a check in an
    earlier (or this) process found the first of them, the one Inductor picks, working; else a
    context that changes nothing.

    Example:
        >>> from torch._inductor import config
        >>> with known_isa():
        ...     config.cpp.vec_isa_ok in (None, True)
        True
    """
    try:
        from torch._inductor import config, cpu_vec_isa
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        identity = host_identity()
        if identity is None:
            return contextlib.nullcontext()
        name = "ctopt-vec-isa-" + hashlib.sha256(identity.encode()).hexdigest()[:24]
        marker = os.path.join(cache_dir(), name)
        if not os.path.exists(marker):
            if not _advertised(cpu_vec_isa)[0]:  # Inductor's probe of the set it will pick
                return contextlib.nullcontext()
            with open(marker + f".{os.getpid()}", "w") as f:
                f.write(identity)
            os.replace(marker + f".{os.getpid()}", marker)
        return config.patch({"cpp.vec_isa_ok": True})
    except Exception:  # noqa: BLE001  (another torch: Inductor checks as it always does)
        return contextlib.nullcontext()


def host_identity() -> str | None:
    """What Inductor's CPU code depends on outside its graph: torch, the Python, the C++
    compiler and its version, and the vector ISAs the CPU advertises (one per line); None where
    Inductor would not pick the first of them itself (not x86, the user chose a set or set
    Inductor's switch, no set advertised) or torch's internals differ.

    Example:
        >>> identity = host_identity()
        >>> identity is None or identity.splitlines()[0] == torch.__version__
        True
    """
    try:
        from torch._inductor import config, cpp_builder, cpu_vec_isa

        if platform.machine() not in ("x86_64", "AMD64") or config.cpp.vec_isa_ok is not None \
                or config.cpp.simdlen is not None or os.environ.get("ATEN_CPU_CAPABILITY"):
            return None  # no probes there, or the user decided
        advertised = [str(isa) for isa in _advertised(cpu_vec_isa)]
        if not advertised:
            return None
        compiler = cpp_builder.get_cpp_compiler()
        if compiler not in _VERSIONS:  # a subprocess: asked once a process
            _VERSIONS[compiler] = cpp_builder.get_compiler_version_info(compiler)
        return "\n".join([torch.__version__, sys.executable, compiler, _VERSIONS[compiler],
                          *advertised])
    except Exception:  # noqa: BLE001  (another torch)
        return None


#: the C++ compilers' versions, by compiler, once asked
_VERSIONS: dict = {}


def _advertised(cpu_vec_isa) -> list:
    """Inductor's vector ISAs whose flags the CPU advertises, in Inductor's order of choice."""
    flags = cpu_vec_isa.x86_isa_checker()
    return [isa for isa in cpu_vec_isa.supported_vec_isa_list
            if all(f in flags for f in str(isa).split())]
