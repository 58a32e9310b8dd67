"""The vector-ISA check Inductor runs in every new process is remembered across processes
(``ctopt.export.warm``): written after a check of the set Inductor picks passed, used without
probing again, never written where the probe failed, and out of the way where the user set
Inductor's switch or chose a set."""

from __future__ import annotations

import os
import platform

import pytest

pytest.importorskip("torch._inductor.cpu_vec_isa")
from torch._inductor import config, cpu_vec_isa  # noqa: E402

from ctopt.export import warm  # noqa: E402

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                                reason="Inductor probes vector ISAs on x86 only")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    return tmp_path


def markers(path):
    return [n for n in os.listdir(path) if n.startswith("ctopt-vec-isa-")]


class Probed:
    """A stand-in for one of Inductor's vector ISAs whose probe (``bool``) is recorded."""

    def __init__(self, isa, ok: bool, seen: list):
        self.isa, self.ok, self.seen = isa, ok, seen

    def __str__(self) -> str:
        return str(self.isa)

    def __bool__(self) -> bool:
        self.seen.append(str(self))
        return self.ok


def stand_ins(monkeypatch, ok: bool) -> list:
    """Inductor's ISA list made of :class:`Probed` stand-ins; returns what gets probed."""
    seen: list = []
    flags = cpu_vec_isa.x86_isa_checker()
    real = [isa for isa in cpu_vec_isa.supported_vec_isa_list
            if all(f in flags for f in str(isa).split())]
    if not real:
        pytest.skip("this CPU advertises no vector ISA Inductor knows")
    monkeypatch.setattr(cpu_vec_isa, "supported_vec_isa_list",
                        [Probed(isa, ok, seen) for isa in real])
    return seen


def test_a_passed_check_is_written_once_and_then_trusted(cache, monkeypatch):
    """Only the set Inductor will pick (the first advertised) is probed: one probe build on a
    cold start instead of one per set."""
    seen = stand_ins(monkeypatch, ok=True)
    with warm.known_isa():
        assert config.cpp.vec_isa_ok is True
    first = str(cpu_vec_isa.supported_vec_isa_list[0])
    assert seen == [first] and len(markers(cache)) == 1
    assert config.cpp.vec_isa_ok is None  # only inside
    with warm.known_isa():
        assert config.cpp.vec_isa_ok is True
    assert seen == [first]  # not probed again


def test_a_failed_probe_keeps_inductors_own_check(cache, monkeypatch):
    seen = stand_ins(monkeypatch, ok=False)
    with warm.known_isa():
        assert config.cpp.vec_isa_ok is None
    assert markers(cache) == [] and len(seen) == 1


def test_the_users_own_setting_and_other_machines_are_left_alone(cache, monkeypatch):
    with config.patch({"cpp.vec_isa_ok": False}), warm.known_isa():
        assert config.cpp.vec_isa_ok is False
    with config.patch({"cpp.simdlen": 256}), warm.known_isa():  # the user picks the set
        assert config.cpp.vec_isa_ok is None
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    with warm.known_isa():
        assert config.cpp.vec_isa_ok is None
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    monkeypatch.setattr(warm.platform, "machine", lambda: "aarch64")
    with warm.known_isa():
        assert config.cpp.vec_isa_ok is None
    assert markers(cache) == []
