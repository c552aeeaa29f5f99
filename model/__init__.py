"""vdis training side: data sets, the sequential VAE, losses, training and evaluation (PyTorch)."""
