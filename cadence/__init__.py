"""cadence: continual and offline reinforcement learning across decision frequencies."""

__version__ = "0.1.0"
