"""Evaluation: streaming confusion matrix and mIOU (metrics), multi-scale + flip inference
(inference), and the valid-weights analysis of Fig. 4 (valid_weights). Submodules are imported
explicitly so that the numpy-only tools do not load TensorFlow."""
