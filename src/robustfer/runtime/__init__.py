"""The runtime: what an application needs to run a trained model, and nothing more.

* :mod:`~robustfer.runtime.checkpoint` -- model checkpoints (``best.safetensors``): metadata,
  atomic writes, loading a model (PyTorch) or only its metadata (no PyTorch needed);
* :mod:`~robustfer.runtime.weights` -- the models shipped inside the package;
* :mod:`~robustfer.runtime.classifier` -- one classifier interface over two backends, PyTorch and
  ONNX Runtime (float32 or int8, with a load-time check of int8 files against float32).

Nothing here imports PyTorch at import time: with the light install (no torch) the ONNX
backend runs the shipped model.
"""
