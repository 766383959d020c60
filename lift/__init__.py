"""LiFT on Kubernetes: train a video critic from human ratings, score rollouts, align text-to-video models."""
