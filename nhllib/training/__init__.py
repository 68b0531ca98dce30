"""From a run configuration to a complete run folder: configuration, model building, the training step and loop, data-parallel training, the final evaluation."""
