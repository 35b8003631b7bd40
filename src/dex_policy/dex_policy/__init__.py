"""PPO + LSTM training, ONNX export, evaluation, the policy node with trial logic."""
