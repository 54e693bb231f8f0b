"""Runs one group of the Python tests for ctest: host (always), torch (needs PyTorch), gpu
(needs PyTorch and a CUDA device). Exits 77, which ctest reports as skipped, where the group's
needs are missing; 1 when a test fails or the group ran no test.

    python run.py GROUP [-k PATTERN ...]   (-k as unittest's: run only tests matching a pattern)
"""

import importlib.util
import os
import sys
import unittest

here = os.path.dirname(os.path.abspath(__file__))
group = sys.argv[1] if len(sys.argv) > 1 else "host"
patterns = [a for k, a in zip(sys.argv[2:], sys.argv[3:]) if k == "-k"]
SKIP = 77

if group in ("torch", "gpu") and importlib.util.find_spec("torch") is None:
    print(f"python.{group}: SKIPPED (PyTorch is not installed)")
    sys.exit(SKIP)
if group == "gpu":
    import torch

    if not torch.cuda.is_available():
        print("python.gpu: SKIPPED (no CUDA device)")
        sys.exit(SKIP)

sys.path.insert(0, here)
loader = unittest.TestLoader()
if patterns:
    loader.testNamePatterns = [p if "*" in p else f"*{p}*" for p in patterns]
suite = loader.discover(here, pattern=f"test_{group}.py", top_level_dir=here)
result = unittest.TextTestRunner(verbosity=2).run(suite)
if result.testsRun == 0:
    print(f"python.{group}: no test ran")
    sys.exit(1)
sys.exit(0 if result.wasSuccessful() else 1)
