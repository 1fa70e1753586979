"""Training: named experiments, one loop, reports, ONNX export and publishing to models_store."""
