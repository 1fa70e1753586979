"""Serving: every model in models_store/ on ONNX Runtime, behind one BentoML service (serving.service)."""
