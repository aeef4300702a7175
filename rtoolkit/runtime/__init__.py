"""How exported graphs are run: one owner for ONNX Runtime sessions (used by export validation and the Predictor alike)
and for what a TensorRT engine needs of the machine it runs on. Imports nothing optional at import time."""
