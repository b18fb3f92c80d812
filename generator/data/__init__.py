"""Inputs: the image set, probe datasets, one image prepared for one model, known labels."""
