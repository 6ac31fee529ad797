"""metagan: hyperparameter search for meta-learned GANs and GAN-augmented meta-learning."""

__version__ = "0.1.0"
