"""From a CT and a model package to a label map: the model card, device, predictor, pre/post-processing."""
