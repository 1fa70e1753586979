"""Training: named experiments, one loop, reports, ONNX export and publishing to models_store.

The service and the demo import only the modules named in TORCH_FREE (bentofile.yaml packs exactly these,
and tests/test_layering.py checks that none of them, nor serving.service, imports torch).
"""

TORCH_FREE = ("answers", "files", "machine", "preprocessing", "registry", "store", "tabular")
