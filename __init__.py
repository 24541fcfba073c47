"""gptoss: put OpenAI's gpt-oss models on consumer devices through ONNX Runtime.

Subpackages:
  gptoss.export   read checkpoints, the PyTorch reference model, ONNX export (needs torch)
  gptoss.quant    pure weight-packing functions (numpy)
  gptoss.targets  one registry row per execution-provider target
  gptoss.runtime  the lean runtime: onnxruntime + numpy + tiktoken only

Importing `gptoss` itself imports nothing heavy.
"""

__version__ = "0.1.0"
