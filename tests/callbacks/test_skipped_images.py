from types import SimpleNamespace

import pytest
import torch

from visionattn.callbacks import SkippedImages


class NcclLikeStrategy:
    """NCCL's all-reduce takes CUDA tensors only, and Lightning's reduce hands it the tensor as
    it is. This stand-in refuses a tensor that is not on the module's device as NCCL refuses a
    CPU one (gloo, which reduces CPU tensors, cannot show it), and sums over two ranks that
    skipped as many images."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.reduced = device, []

    def reduce(self, tensor: torch.Tensor, reduce_op: str) -> torch.Tensor:
        if tensor.device != self.device:
            raise RuntimeError(f"No backend type associated with device type {tensor.device.type}")
        self.reduced.append(tensor)
        # A meta tensor has no value to read: the count comes from what the test set.
        return torch.tensor(2 * 3)


@pytest.mark.parametrize("stage", ["train", "val"])
def test_the_count_is_reduced_on_the_module_device(stage):
    device = torch.device("meta")  # where a CUDA module's tensors would be
    strategy = NcclLikeStrategy(device)
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(skipped={stage: 3}),
        strategy=strategy,
        sanity_checking=False,
        is_global_zero=True,
        current_epoch=0,
    )
    logged = {}
    module = SimpleNamespace(device=device, log=lambda key, value, **_: logged.update({key: value}))
    callback = SkippedImages()
    hook = callback.on_train_epoch_end if stage == "train" else callback.on_validation_epoch_end
    hook(trainer, module)
    [tensor] = strategy.reduced
    assert tensor.device == device
    assert callback.total[stage] == 6 and logged == {f"data/skipped_{stage}": 6.0}
