"""Training machinery: the algorithm contract, optimisers, the training loop, model selection."""
