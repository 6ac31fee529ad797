"""GAN building blocks (networks, losses, metrics) and the GAN x meta-learning methods,
each registered in metagan.meta.METHODS when its module is imported (here)."""

from . import dagan, fewshot, joint  # noqa: F401  (registration)
