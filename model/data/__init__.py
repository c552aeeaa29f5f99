"""Data sets: Sprites (the benchmark), Stochastic Moving MNIST, and folders of user videos."""
