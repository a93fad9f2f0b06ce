import pytest
import torch

from metatune.mujoco_loader import load_mujoco

load_mujoco()  # off-screen MuJoCo, loaded after triton whichever test imports either first


@pytest.fixture(autouse=True)
def _module_default_dtype(request):
    """Run each test under its module's DEFAULT_DTYPE (float32 unless the module says otherwise).

    Modules that build float64 constants at import switch the default for their own import only
    and switch it back at their end, so nothing leaks into the modules collected after them.
    """
    torch.set_default_dtype(getattr(request.module, "DEFAULT_DTYPE", torch.float32))
    yield
    torch.set_default_dtype(torch.float32)
