"""Losses shared by tasks: contrastive image-text losses (CLIP softmax, SigLIP sigmoid)."""
