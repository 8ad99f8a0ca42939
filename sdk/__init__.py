"""Server side of metaedge: task families, models, meta-learners, trainer, evaluator, checkpoints."""
