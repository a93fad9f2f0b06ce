"""The one exception type the package raises for bad input or a failed solve."""


class MetatuneError(ValueError):
    """Bad input or a numerical failure, with a message that names the problem."""


def refuse_func_transforms(what: str, alternative: str) -> None:
    """Raise when called under torch.func transforms (grad, vmap, jacrev...): `what` differentiates with
    torch.autograd inside, which those transforms cannot trace."""
    import torch

    if torch._C._functorch.peek_interpreter_stack() is not None:
        raise MetatuneError(f"{what} cannot run under torch.func transforms (grad, vmap, jacrev, ...): it "
                            f"differentiates with torch.autograd inside. {alternative}")
