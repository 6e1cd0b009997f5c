"""Every benchmark script imports: a rename in the library must not leave a benchmark that fails on its first line.
The benchmarks themselves run with `make bench`, not in the test suite."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("bench_*.py")))
def test_benchmark_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"_bench_{script[:-3]}", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # top-level imports only: main() runs under __main__
    assert callable(getattr(module, "main", None)), f"{script} has no main()"
    sys.modules.pop("_common", None)
