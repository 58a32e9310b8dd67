"""A warm start of the compiled path: Inductor's vector-ISA check, passed once, is remembered
across processes. Torch only — copied into standalone exports.

Before its first CPU kernel in a process, Inductor checks each vector instruction set the CPU
advertises (AVX-512, AVX2, ...) by building a probe library and loading it in a fresh Python
process: about 1 s on a small machine, each time a training script starts, even when every
kernel comes from the cache. :func:`known_isa` runs that check through Inductor once per
(torch, compiler, CPU) and, when every advertised set passed, writes a marker beside Inductor's
cache; every compile of ctopt's CPU kernels then runs with ``cpp.vec_isa_ok = True``
(Inductor's own switch to skip the probe), so the first process and the later ones pick the
same instruction set and share cache entries. Where a probe failed, where the machine is not
x86, or where torch's internals differ, nothing is patched and Inductor checks as usual.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys

import torch

__all__ = ["known_isa"]


def known_isa():
    """A context in which Inductor trusts the CPU's advertised vector ISAs, when a check in an
    earlier (or this) process found them all working; else a context that changes nothing.

    Example:
        >>> from torch._inductor import config
        >>> with known_isa():
        ...     config.cpp.vec_isa_ok in (None, True)
        True
    """
    try:
        from torch._inductor import config, cpp_builder, cpu_vec_isa
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        if platform.machine() not in ("x86_64", "AMD64") or config.cpp.vec_isa_ok is not None:
            return contextlib.nullcontext()  # no probes there, or the user decided
        flags = cpu_vec_isa.x86_isa_checker()
        advertised = [str(isa) for isa in cpu_vec_isa.supported_vec_isa_list
                      if all(f in flags for f in str(isa).split())]
        compiler = cpp_builder.get_cpp_compiler()
        identity = "\n".join([torch.__version__, sys.executable, compiler,
                              cpp_builder.get_compiler_version_info(compiler), *advertised])
        name = "ctopt-vec-isa-" + hashlib.sha256(identity.encode()).hexdigest()[:24]
        marker = os.path.join(cache_dir(), name)
        if not os.path.exists(marker):
            checked = [str(isa) for isa in cpu_vec_isa.valid_vec_isa_list()]  # the probes
            if checked != advertised:
                return contextlib.nullcontext()
            with open(marker + f".{os.getpid()}", "w") as f:
                f.write(identity)
            os.replace(marker + f".{os.getpid()}", marker)
        return config.patch({"cpp.vec_isa_ok": True})
    except Exception:  # noqa: BLE001  (another torch: Inductor checks as it always does)
        return contextlib.nullcontext()
