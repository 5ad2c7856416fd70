"""PyTorch's quantize_dynamic quantizes a projected nn.LSTM without a word, and the quantized LSTM then cannot run

Checked with torch 2.13.0+cpu (engines fbgemm and qnnpack), numpy 2.4.6.

Expected: torch.ao.quantization.quantize_dynamic(model, {nn.LSTM}, dtype=torch.qint8) of an nn.LSTM with proj_size
either refuses it (the dynamically quantized LSTM has no projection) or returns a module that runs it.

Actual: quantize_dynamic returns a torch.ao.nn.quantized.dynamic.LSTM without a warning; its forward raises
RuntimeError "The number of rows in the packB should be equal to K" (fbgemm; qnnpack raises its own shape error):
the projection is packed as if it were the recurrent weight and the shapes no longer fit. The float module runs.

Upstream: pytorch/pytorch#74953 ("LSTM quantization fails if proj_size > 0", open since 2022-03) and #60008
("Dynamic quantized LSTM does not support output projection now.", open); neither says quantize_dynamic accepts the
module silently.
"""

import sys
import warnings

try:
    import torch
except ImportError as error:
    print(f"framework missing: {error} (pip install torch)")
    sys.exit(77)

T, B, I, H, P = 5, 3, 4, 6, 3
torch.manual_seed(0)
reproduced = 0
for engine in ("fbgemm", "qnnpack"):
    if engine not in torch.backends.quantized.supported_engines:
        print(f"{engine}: not in this build")
        continue
    torch.backends.quantized.engine = engine
    model = torch.nn.Sequential(torch.nn.LSTM(I, H, proj_size=P)).eval()
    x = torch.randn(T, B, I)
    with torch.no_grad():
        y_float, _ = model(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.LSTM}, dtype=torch.qint8)
        print(f"{engine}: quantize_dynamic returned {type(quantized[0]).__module__}.{type(quantized[0]).__name__}; "
              f"the float module's y has shape {tuple(y_float.shape)}")
        try:
            y, _ = quantized(x)
            print(f"{engine}: the quantized module ran: y {tuple(y.shape)}, max |y - float y| "
                  f"{float((y - y_float).abs().max()):.3g}")
        except RuntimeError as error:
            print(f"{engine}: the quantized module raises RuntimeError: {str(error).splitlines()[0]}")
            reproduced += 1
sys.exit(0 if reproduced else 1)
