"""Cube pose estimation from three cameras: datasets, CNN training, ONNX export, the perception node."""
