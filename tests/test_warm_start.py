"""The vector-ISA check Inductor runs in every new process is remembered across processes
(``ctopt.export.warm``): written after a check that passed, used without probing again, never
written where a probe failed, and out of the way where the user set Inductor's switch."""

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


def test_a_passed_check_is_written_once_and_then_trusted(cache, monkeypatch):
    probes = []
    real = cpu_vec_isa.valid_vec_isa_list
    monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", lambda: probes.append(1) or real())
    with warm.known_isa():
        assert config.cpp.vec_isa_ok is True
    assert probes == [1] and len(markers(cache)) == 1
    assert config.cpp.vec_isa_ok is None  # only inside

    def no_probe():
        raise AssertionError("probed again")

    monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", no_probe)
    with warm.known_isa():
        assert config.cpp.vec_isa_ok is True


def test_a_failed_probe_keeps_inductors_own_check(cache, monkeypatch):
    monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", lambda: [])  # every probe failed
    with warm.known_isa():
        assert config.cpp.vec_isa_ok is None
    assert markers(cache) == []


def test_the_users_own_setting_and_other_machines_are_left_alone(cache, monkeypatch):
    with config.patch({"cpp.vec_isa_ok": False}), warm.known_isa():
        assert config.cpp.vec_isa_ok is False
    monkeypatch.setattr(warm.platform, "machine", lambda: "aarch64")
    with warm.known_isa():
        assert config.cpp.vec_isa_ok is None
    assert markers(cache) == []
