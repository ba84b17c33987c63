"""Evaluation on the test set, as a library the tasks compose: estimators (ELBO, importance-
weighted likelihoods, conditional accuracy), the reference classifier, and report writing."""
