"""Graph-level custom operators AV models need (definition, TIR legalization, torch/ONNX
converters).

The folder keeps the product brief's name; Relay no longer exists in TVM and these
operators are Relax operators. None are defined yet.
"""
