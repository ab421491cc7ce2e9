"""Training package: CNN and DB-VAE face classifiers, adaptive resampling, ONNX export, evaluation."""
