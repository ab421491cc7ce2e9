"""Builders for the service tests: small real ONNX models that honour the contract, and real encoded images."""
