"""Evaluation of a trained model through the product's own engine, and its metrics."""
