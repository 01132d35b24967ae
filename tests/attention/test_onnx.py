"""Which plugins export to ONNX: the README's list is checked here, both ways.

Each plugin is exported with ``torch.onnx.export(dynamo=True)`` and run in onnxruntime; its
output must equal PyTorch's.
"""

import pytest
import torch

from tests.attention.test_all_plugins import PLUGINS, SIZE, build, wake

onnxruntime = pytest.importorskip("onnxruntime")

# Also in the README.
NOT_EXPORTABLE: set[str] = set()


@pytest.mark.parametrize("name", PLUGINS)
def test_onnx_export_matches_pytorch(name, tmp_path):
    plugin = wake(build(name)).eval()
    x = torch.randn(1, 16, *SIZE)
    if name in NOT_EXPORTABLE:
        with pytest.raises(Exception):  # noqa: B017 - the exporter's error types vary by op
            torch.onnx.export(plugin, (x,), tmp_path / "plugin.onnx", dynamo=True)
        return
    torch.onnx.export(plugin, (x,), tmp_path / "plugin.onnx", dynamo=True)
    session = onnxruntime.InferenceSession(tmp_path / "plugin.onnx")
    (exported,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(exported), plugin(x), rtol=1e-4, atol=1e-4)
