"""Face-detection inference service: FastAPI on ONNX Runtime, serving the files in `models/`.

Never imports `training` or PyTorch: the two sides meet only at the model contract (see README).
"""
