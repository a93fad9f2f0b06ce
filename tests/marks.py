"""Skip marks shared by the tests that need hardware or extras this machine may lack."""
import importlib.util

import pytest
import torch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_gsplat = pytest.mark.skipif(importlib.util.find_spec("gsplat") is None, reason="needs gsplat (the [cuda] extra)")
